"""The site's routes plus the announcement's example at /seed/."""

from django.urls import path

from config.urls import urlpatterns as site_urlpatterns
from tests import views

urlpatterns = [
    *site_urlpatterns,
    path("seed/", views.echo),
]
