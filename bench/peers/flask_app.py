"""Flask-Sock peer for the benchmark: echo and broadcast, written the way
Flask-Sock's documentation suggests (a lock-protected set of clients)."""

import contextlib
import threading

from flask import Flask
from flask_sock import ConnectionClosed, Sock

app = Flask(__name__)
sock = Sock(app)
clients: set = set()
clients_lock = threading.Lock()


@sock.route("/echo/ws/")
def echo(ws):
    while True:
        ws.send(ws.receive())


@sock.route("/broadcast/ws/")
def broadcast(ws):
    with clients_lock:
        clients.add(ws)
    try:
        while True:
            message = ws.receive()
            with clients_lock:
                members = list(clients)
            for member in members:
                with contextlib.suppress(ConnectionClosed):
                    member.send(message)
    finally:
        with clients_lock:
            clients.discard(ws)
