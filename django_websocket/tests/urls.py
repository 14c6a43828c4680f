from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from django_websocket.tests import views

urlpatterns = [
    path("echo/", views.echo),
    path("csrf-exempt-echo/", csrf_exempt(views.echo)),
    path("seed/", views.seed_echo),
    path("both/", views.both),
    path("nonblocking/", views.nonblocking),
    path("wait/", views.wait_until_closed),
    path("close/", views.server_closes),
    path("raises/", views.raises),
    path("subprotocols/", views.negotiates),
    path("small/", views.small),
    path("threads/", views.broadcast_from_threads),
    path("json/", views.json_echo),
    path("flood/", views.flood),
    path("ping/", views.pinger),
    path("database/", views.database_then_wait),
    path("sink/", views.sink),
    path("drain/", views.drain),
    path("never-reads/", views.never_reads),
    path("self-publisher/", views.publishes_to_itself),
    path("failing-callback/", views.failing_callback),
    path("polls/", views.polls),
    path("pings-then-closes/", views.pings_then_closes),
    path("groups/<str:name>/sink/", views.group_sink),
    path("groups/<str:name>/", views.group_member),
    path("groups/<str:name>/listen/", views.group_listener),
    path("groups/<str:name>/as/<str:identity>/", views.presence_member),
]
