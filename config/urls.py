"""URL routes: the home page, then one include() per demo app.

Each app mounts its page and its socket together (``/echo/`` and
``/echo/ws/``), so copying an app copies both.
https://docs.djangoproject.com/en/5.2/topics/http/urls/
"""

from django.contrib import admin
from django.urls import include, path

from config import views

urlpatterns = [
    path("", views.home, name="home"),
    path("echo/", include("apps.echo.urls")),
    path("livesearch/", include("apps.livesearch.urls")),
    path("chat/", include("apps.chat.urls")),
    path("accounts/", include("django.contrib.auth.urls")),  # login, logout
    path("admin/", admin.site.urls),
]
