from django.apps import AppConfig


class EchoConfig(AppConfig):
    name = "apps.echo"
    label = "echo"
    verbose_name = "Echo"
