from django.urls import path

from apps.livesearch import views

app_name = "livesearch"

urlpatterns = [
    path("", views.page, name="page"),
    path("ws/", views.socket, name="socket"),
]
