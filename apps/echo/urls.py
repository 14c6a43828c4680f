from django.urls import path

from apps.echo import views

app_name = "echo"

urlpatterns = [
    path("", views.page, name="page"),
    path("ws/", views.socket, name="socket"),
]
