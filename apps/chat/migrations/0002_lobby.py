from django.db import migrations


def create_lobby(apps, schema_editor):
    """A first room, so that /chat/ is not empty on a new site."""
    Room = apps.get_model("chat", "Room")
    Room.objects.get_or_create(name="lobby")


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    operations = [migrations.RunPython(create_lobby, migrations.RunPython.noop)]
