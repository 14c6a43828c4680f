"""The production setup of docs/deploy.md, end to end on loopback.

Real servers, started by module fixtures and stopped by their PIDs: PostgreSQL
and Redis, two gunicorn instances started with the documented command (one
gthread, one gevent), and nginx in front of them with deploy/nginx.conf, TLS
included. Clients connect through nginx as browsers would. The test that
stops an instance runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import runpy
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect

from django_websocket import CloseCode
from django_websocket.tests.conftest import (
    ROOT,
    TIMEOUT,
    RedisServer,
    ServerProcess,
    free_port,
)
from tests.postgres import PG_BIN, PostgresServer

T = TypeVar("T")

DEPLOY_DOC = ROOT / "docs" / "deploy.md"
GUNICORN_COMMAND = ["gunicorn", "-c", "deploy/gunicorn.conf.py"]  # docs/deploy.md's
GUNICORN = [str(Path(sys.executable).with_name("gunicorn")), *GUNICORN_COMMAND[1:]]
MANAGE = [sys.executable, "manage.py"]
MIGRATE = ["migrate", "--noinput"]
COLLECTSTATIC = ["collectstatic", "--noinput"]
HOST = "127.0.0.1"  # the site's name in nginx, ALLOWED_HOSTS and the certificate
CONNECTIONS = 2000  # held at once by the gevent worker

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


# Servers.


class NginxServer:
    """nginx with deploy/nginx.conf as its only site, running in the
    foreground under ``directory`` (pid, logs, temp files), stopped by PID."""

    # The values marked "# EDIT" in deploy/nginx.conf, and how many times each
    # appears there.
    MARKED = {
        "server 127.0.0.1:8000;": 1,
        "server 127.0.0.1:8001;": 1,
        "listen 80;": 1,
        "listen 443 ssl;": 1,
        "server_name example.com;": 2,
        "/etc/letsencrypt/live/example.com/fullchain.pem": 1,
        "/etc/letsencrypt/live/example.com/privkey.pem": 1,
        "/srv/starter/staticfiles/": 1,
    }

    def __init__(self, directory: Path, values: dict[str, str], https_port: int):
        self.directory = directory
        self.https_port = https_port
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        marked_lines = re.findall(r"# EDIT$", site, flags=re.MULTILINE)
        assert len(marked_lines) == sum(self.MARKED.values())
        for marked, count in self.MARKED.items():
            assert site.count(marked) == count, marked
            site = site.replace(marked, values[marked])
        (directory / "starter.conf").write_text(site)
        # What Debian's /etc/nginx/nginx.conf provides around a site, with
        # one worker process so that round robin strictly alternates.
        (directory / "nginx.conf").write_text(
            "worker_processes 1;\n"
            "pid nginx.pid;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    include /etc/nginx/mime.types;\n"
            "    default_type application/octet-stream;\n"
            "    access_log access.log;\n"
            "    client_body_temp_path client_body;\n"
            "    proxy_temp_path proxy;\n"
            "    fastcgi_temp_path fastcgi;\n"
            "    uwsgi_temp_path uwsgi;\n"
            "    scgi_temp_path scgi;\n"
            "    include starter.conf;\n"
            "}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Paths in the configuration are relative to the prefix, -p.
        nginx = [NGINX, "-p", f"{self.directory}/", "-c", "nginx.conf",
                 "-e", "error.log", "-g", "daemon off;"]  # fmt: skip
        self.process = subprocess.Popen(
            nginx, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection((HOST, self.https_port), timeout=0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    errors = (self.directory / "error.log").read_text()
                    raise RuntimeError(f"nginx did not start:\n{errors}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()  # "fast" shutdown, sockets included
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
            self.process = None


@dataclass
class Deployment:
    """What the tests reach: nginx's URLs and both instances."""

    url: str  # https://host:port through nginx
    http_url: str  # nginx's plain HTTP port, which only redirects
    tls: ssl.SSLContext  # trusts the test certificate
    static_root: Path
    gthread: ServerProcess
    gevent: ServerProcess

    @property
    def ws_url(self) -> str:
        return "wss" + self.url.removeprefix("https")


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "ec",
               "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
               "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
               "-keyout", key, "-out", cert]  # fmt: skip
    subprocess.run(openssl, check=True, capture_output=True, timeout=TIMEOUT)
    return cert, key


def _stop_gracefully(process: ServerProcess) -> None:
    if process.process.poll() is None:
        process.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(TIMEOUT * 3)
    process.stop()  # SIGKILL if it is still running


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """PostgreSQL, Redis, two gunicorn instances and nginx, as docs/deploy.md
    sets them up on one host."""
    if PG_BIN is None or not Path(NGINX).exists():
        pytest.fail(
            "needs Debian's nginx and postgresql packages (`make deps` installs them)"
        )
    # Each connection is a file descriptor, twice over on loopback; the
    # servers inherit the limit.
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CONNECTIONS * 2 + 1000
    if limits[0] != resource.RLIM_INFINITY and limits[0] < wanted:
        hard = limits[1]
        soft = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # Under /tmp rather than pytest's private tmp_path: nginx's workers and
    # PostgreSQL run as other users and must reach their files.
    directory = Path(tempfile.mkdtemp(prefix="starter-deploy-"))
    directory.chmod(0o755)
    postgres = PostgresServer(directory / "postgres")
    redis = RedisServer()
    started: list[Any] = []
    try:
        postgres.start()
        started.append(postgres)
        redis.start()
        started.append(redis)
        static_root = directory / "staticfiles"
        env = {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": HOST,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "DJANGO_STATIC_ROOT": str(static_root),
            "PYTHONDEVMODE": "",  # as in production: no debug allocator
        }
        for command in (MIGRATE, COLLECTSTATIC):
            result = subprocess.run(
                [*MANAGE, *command],
                cwd=ROOT,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=TIMEOUT * 6,
            )
            assert result.returncode == 0, result.stderr
        http_port, https_port = free_port(), free_port()
        # nginx passes $host, without the port: on a port other than 443 the
        # site's origin must be trusted by name, as for Django's CSRF check.
        env["DJANGO_CSRF_TRUSTED_ORIGINS"] = f"https://{HOST}:{https_port}"
        instances = {}
        for worker_class in ("gthread", "gevent"):
            port = free_port()
            instance_env = {
                **env,
                "GUNICORN_BIND": f"{HOST}:{port}",
                "GUNICORN_WORKERS": "1",
                "GUNICORN_WORKER_CLASS": worker_class,
            }
            instances[worker_class] = ServerProcess(GUNICORN, port, instance_env)
            started.append(instances[worker_class])
        cert, key = _self_signed_certificate(directory)
        nginx = NginxServer(
            directory,
            {
                "server 127.0.0.1:8000;": f"server {HOST}:{instances['gthread'].port};",
                "server 127.0.0.1:8001;": f"server {HOST}:{instances['gevent'].port};",
                "listen 80;": f"listen {HOST}:{http_port};",
                "listen 443 ssl;": f"listen {HOST}:{https_port} ssl;",
                "server_name example.com;": f"server_name {HOST};",
                "/etc/letsencrypt/live/example.com/fullchain.pem": str(cert),
                "/etc/letsencrypt/live/example.com/privkey.pem": str(key),
                "/srv/starter/staticfiles/": f"{static_root}/",
            },
            https_port,
        )
        nginx.start()
        started.append(nginx)
        yield Deployment(
            url=f"https://{HOST}:{https_port}",
            http_url=f"http://{HOST}:{http_port}",
            tls=ssl.create_default_context(cafile=cert),
            static_root=static_root,
            gthread=instances["gthread"],
            gevent=instances["gevent"],
        )
    finally:
        for server in reversed(started):
            if isinstance(server, ServerProcess):
                _stop_gracefully(server)
            else:
                server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


# Clients.


def _run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` in a thread of its own: once the browser tests
    have started Playwright, its event loop runs in this one for the rest of
    the session."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, main, debug=False).result()


def _established(port: int) -> int:
    """Open TCP connections to a local port, as the kernel lists them."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        if state == "01" and int(local.rpartition(":")[2], 16) == port:
            count += 1
    return count


class ChatMember:
    """One person in the lobby over websockets' asyncio client, through
    nginx; remembers the ids of the messages it received, in order, across
    reconnections."""

    def __init__(self, deployment: Deployment, nick: str) -> None:
        self.deployment = deployment
        self.nick = nick
        self.ids: list[int] = []
        self.connection: ClientConnection | None = None
        self.instance: ServerProcess | None = None  # which one serves it
        self.users: set[str] = set()  # who is in the room, as the page sees it

    async def join(self, after: int | None = None) -> list[dict[str, Any]]:
        """Connect, note which instance took the connection, and return the
        history the server sent first."""
        query = {"nick": self.nick} | ({"after": str(after)} if after else {})
        url = f"{self.deployment.ws_url}/chat/lobby/ws/?{urlencode(query)}"
        instances = [self.deployment.gthread, self.deployment.gevent]
        before = [_established(instance.port) for instance in instances]
        self.connection = await connect(
            url, ssl=self.deployment.tls, open_timeout=TIMEOUT, close_timeout=TIMEOUT
        )
        history = await self.next("history")
        grew = [
            instance
            for instance, count in zip(instances, before, strict=True)
            if _established(instance.port) > count
        ]
        assert len(grew) == 1, "cannot tell which instance took the connection"
        self.instance = grew[0]
        return history["messages"]

    async def join_on(self, instance: ServerProcess) -> None:
        """Join until nginx's round robin hands this member to *instance*."""
        for _ in range(3):
            await self.join()
            if self.instance is instance:
                return
            await self.leave()
        pytest.fail(f"nginx never sent {self.nick} to port {instance.port}")

    async def next(self, type: str) -> dict[str, Any]:
        """The next event of this type, recording messages on the way."""
        assert self.connection is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                event = json.loads(await self.connection.recv())
                if event["type"] == "message":
                    self.ids.append(event["id"])
                elif event["type"] == "history":
                    self.ids.extend(message["id"] for message in event["messages"])
                elif event["type"] == "presence":
                    self.users = set(event["users"])
                elif event["type"] == "presence_change":
                    self.users |= set(event["joined"])
                    self.users -= set(event["left"])
                if event["type"] == type or event["type"].startswith(type):
                    return event

    async def presence(self, *users: str) -> None:
        """Wait until the room's presence is exactly *users*."""
        while self.users != set(users):
            await self.next("presence")

    async def say(self, text: str) -> int:
        """Post a message; return its id once the room delivered it back."""
        assert self.connection is not None
        await self.connection.send(json.dumps({"type": "message", "text": text}))
        while True:
            event = await self.next("message")
            if (event["user"], event["text"]) == (self.nick, text):
                return int(event["id"])

    async def receive(self, message_id: int) -> None:
        """Wait for the message with this id."""
        while message_id not in self.ids:
            await self.next("message")

    async def leave(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None


# Tests.


def test_the_deployment_guide_shows_the_commands_these_tests_run():
    guide = DEPLOY_DOC.read_text()
    assert " ".join(GUNICORN_COMMAND) in guide
    assert "GUNICORN_WORKER_CLASS=gevent" in guide
    assert f"python manage.py {' '.join(MIGRATE)}" in guide
    assert f"python manage.py {' '.join(COLLECTSTATIC)}" in guide
    assert "python manage.py check --deploy" in guide
    assert "deploy/nginx.conf" in guide


def test_gunicorn_config_imports_nothing_from_django():
    load = (
        "import runpy, sys; runpy.run_path('deploy/gunicorn.conf.py');"
        "print(sorted(name for name in sys.modules if name.startswith('django.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", load],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {},
            {
                "bind": ["127.0.0.1:8000"],
                "worker_class": "gthread",
                "workers": 1,
                "threads": 200,
                "worker_connections": 250,
            },
        ),
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, {"workers": 2}),
        ({"GUNICORN_THREADS": "1000"}, {"threads": 1000, "worker_connections": 1050}),
        (
            {"GUNICORN_WORKER_CLASS": "gevent"},
            {"worker_class": "gevent", "worker_connections": 10000},
        ),
        (
            {"GUNICORN_BIND": "10.0.0.11:8000", "GUNICORN_WORKERS": "4"},
            {"bind": ["10.0.0.11:8000"], "workers": 4},
        ),
    ],
    ids=["defaults", "redis", "threads", "gevent", "bind-workers"],
)
def test_gunicorn_config_reads_the_environment(monkeypatch, env, expected):
    for name in list(os.environ):
        if name == "REDIS_URL" or name.startswith("GUNICORN_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert {name: config[name] for name in expected} == expected
    assert config["worker_connections"] > config["threads"]


def test_check_deploy_passes_with_the_production_environment():
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        {
            line.partition("=")[0]: line.partition("=")[2]
            for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
            if line and not line.startswith("#")
        }
    )
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    result = subprocess.run(
        [*MANAGE, "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_nginx_serves_static_files_from_static_root(deployment):
    with httpx.Client(verify=deployment.tls, timeout=TIMEOUT) as client:
        response = client.get(f"{deployment.url}/static/js/socket.js")
        redirect = client.get(f"{deployment.http_url}/echo/")
    assert response.status_code == 200
    assert response.text == (deployment.static_root / "js" / "socket.js").read_text()
    assert response.headers["content-type"] == "application/javascript"
    assert response.headers["cache-control"] == "max-age=3600"
    assert redirect.status_code == 301
    assert redirect.headers["location"] == f"https://{HOST}/echo/"


def test_pages_come_from_django_over_https_with_secure_cookies(deployment):
    with httpx.Client(verify=deployment.tls, timeout=TIMEOUT) as client:
        response = client.get(f"{deployment.url}/chat/")
    # Django saw HTTPS through X-Forwarded-Proto: no redirect, HSTS, and a
    # CSRF cookie for the join form that browsers send over HTTPS only.
    assert response.status_code == 200
    assert response.headers["strict-transport-security"] == (
        "max-age=3600; includeSubDomains; preload"
    )
    assert "; Secure" in response.headers["set-cookie"]
    assert "csrfmiddlewaretoken" in response.text


def test_echo_works_through_nginx_on_both_instances(deployment):
    async def echo() -> int:
        ports = [deployment.gthread.port, deployment.gevent.port]
        served = set()
        for _ in range(2):  # round robin: one connection each
            before = [_established(port) for port in ports]
            async with connect(
                f"{deployment.ws_url}/echo/ws/",
                ssl=deployment.tls,
                origin=deployment.url,  # type: ignore[arg-type]
                open_timeout=TIMEOUT,
                close_timeout=TIMEOUT,
            ) as websocket:
                await websocket.send("through nginx")
                async with asyncio.timeout(TIMEOUT):
                    assert await websocket.recv() == "through nginx"
                served |= {
                    port
                    for port, count in zip(ports, before, strict=True)
                    if _established(port) > count
                }
        return len(served)

    assert _run_async(echo()) == 2


@pytest.mark.parametrize(
    "origin",
    ["https://evil.test", "http://{host}:{port}"],  # another site; plain HTTP
)
def test_a_foreign_origin_is_refused_through_nginx(deployment, origin):
    origin = origin.format(host=HOST, port=deployment.url.rsplit(":", 1)[1])
    # The sync client closes its socket when the handshake is refused.
    with pytest.raises(InvalidStatus) as refused:
        sync_connect(
            f"{deployment.ws_url}/echo/ws/",
            ssl=deployment.tls,
            origin=origin,  # type: ignore[arg-type]
            open_timeout=TIMEOUT,
        )
    assert refused.value.response.status_code == 403
    assert (
        refused.value.response.body
        == (
            f"origin {origin} does not match https://{HOST} "
            "nor CSRF_TRUSTED_ORIGINS or WEBSOCKET_ALLOWED_ORIGINS\n"
        ).encode()
    )


def test_chat_members_on_different_instances_see_each_other(deployment):
    async def chat() -> None:
        alice = ChatMember(deployment, "alice")
        bob = ChatMember(deployment, "bob")
        await alice.join_on(deployment.gthread)
        await bob.join_on(deployment.gevent)
        try:
            await alice.presence("alice", "bob")
            await bob.presence("alice", "bob")
            hello = await alice.say("hello from gthread")
            await bob.receive(hello)
            hi = await bob.say("hi from gevent")
            await alice.receive(hi)
            assert alice.ids[-2:] == bob.ids[-2:] == [hello, hi]
        finally:
            await alice.leave()
            await bob.leave()

    _run_async(chat())


def _worker_pid(master: int) -> int:
    """The one worker process of a gunicorn master."""
    children = [
        int(stat.parent.name)
        for stat in Path("/proc").glob("[0-9]*/stat")
        if _read_or_empty(stat).rpartition(")")[2].split()[1:2] == [str(master)]
    ]
    assert len(children) == 1, children
    return children[0]


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the process has gone meanwhile
        return ""


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def test_gevent_worker_holds_2000_websockets_in_one_process(deployment, capsys):
    # Straight to the instance, headers as nginx sets them: one process is
    # measured, and nginx would share the load with the other instance.
    url = f"ws://{HOST}:{deployment.gevent.port}/echo/ws/"
    headers = {"X-Forwarded-Proto": "https"}
    handshakes = asyncio.Semaphore(100)  # handshakes in flight at once

    async def open_one() -> ClientConnection:
        async with handshakes:
            return await connect(
                url,
                additional_headers=headers,
                compression=None,
                open_timeout=TIMEOUT * 2,
                close_timeout=TIMEOUT,
            )

    async def echo(websocket: ClientConnection, text: str) -> None:
        await websocket.send(text)
        assert await websocket.recv() == text

    async def hold() -> tuple[float, int, int]:
        first = await open_one()
        await echo(first, "warm up")
        await first.close()
        worker = _worker_pid(deployment.gevent.process.pid)
        baseline = _rss_kib(worker)
        started = time.monotonic()
        results = await asyncio.gather(
            *(open_one() for _ in range(CONNECTIONS)), return_exceptions=True
        )
        opened = time.monotonic() - started
        websockets = [ws for ws in results if isinstance(ws, ClientConnection)]
        try:
            errors = [error for error in results if isinstance(error, BaseException)]
            assert not errors, f"{len(errors)} connections failed, first: {errors[0]}"
            async with asyncio.timeout(TIMEOUT * 2):
                await asyncio.gather(
                    *(echo(websocket, str(n)) for n, websocket in enumerate(websockets))
                )
            assert _established(deployment.gevent.port) >= CONNECTIONS
            grown = _rss_kib(worker) - baseline
        finally:
            await asyncio.gather(*(websocket.close() for websocket in websockets))
        return opened, baseline, grown

    opened, baseline, grown = _run_async(hold())
    with capsys.disabled():  # shown in every run: the figure docs/deploy.md quotes
        print(  # noqa: T201
            f"\ngevent worker, {CONNECTIONS} WebSockets opened in {opened:.1f} s:"
            f" RSS {baseline / 1024:.0f} MiB before, +{grown / 1024:.1f} MiB,"
            f" {grown / CONNECTIONS:.1f} KiB per connection"
        )


def test_sigterm_closes_with_1001_and_clients_resume_on_the_survivor(deployment):
    """Runs last: it stops the gthread instance."""

    async def restart() -> float:
        alice = ChatMember(deployment, "alice")  # on the instance that stops
        bob = ChatMember(deployment, "bob")
        await alice.join_on(deployment.gthread)
        await bob.join_on(deployment.gevent)
        try:
            before = await bob.say("before the restart")
            await alice.receive(before)

            deployment.gthread.signal(signal.SIGTERM)
            stopping = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                await alice.next("message")
            assert time.monotonic() - stopping < 1
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CloseCode.GOING_AWAY
            assert closed.value.rcvd.reason == "server shutting down"

            missed = [await bob.say("while alice is away") for _ in range(2)]
            history = await _rejoin(alice, after=alice.ids[-1])
            assert alice.instance is deployment.gevent
            assert [message["id"] for message in history] == missed
            after = await bob.say("after the restart")
            await alice.receive(after)

            expected = [before, *missed, after]
            assert alice.ids[alice.ids.index(before) :] == expected
            assert len(set(alice.ids)) == len(alice.ids)
        finally:
            await alice.leave()
            await bob.leave()
        return stopping

    stopping = _run_async(restart())
    # Its last socket gone, the instance exits well before graceful_timeout.
    assert deployment.gthread.wait(TIMEOUT) == 0
    assert time.monotonic() - stopping < 3
    assert "Traceback" not in deployment.gthread.output


async def _rejoin(member: ChatMember, after: int) -> list[dict[str, Any]]:
    """Reconnect as a browser does, retrying while nginx still tries the
    instance that is going away."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return await member.join(after=after)
        except (OSError, InvalidStatus):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
