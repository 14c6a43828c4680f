from django.urls import include, path

from apps.echo import views as echo
from apps.livesearch import views as livesearch
from bench import views

urlpatterns = [
    path("echo/ws/", echo.socket),
    path("chat/", include("apps.chat.urls")),
    path("broadcast/ws/", views.broadcast),
    path("livesearch/ws/", livesearch.socket),
    path("hostile/sink/ws/", views.sink),
    path("hostile/hold/ws/", views.hold),
    path("hostile/member/ws/", views.member),
]
