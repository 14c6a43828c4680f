from django.urls import path

from apps.echo import views as echo
from bench import views

urlpatterns = [
    path("echo/ws/", echo.socket),
    path("broadcast/ws/", views.broadcast),
]
