"""Reproducible WebSocket benchmark: this project against its peers.

    python bench/run.py            # everything, under 20 minutes (make bench)
    python bench/run.py --quick    # a smaller run, under 3 minutes
    python bench/run.py --servers runserver,gevent --scenarios echo

Each server runs pinned to CPU 0 and the Node ``ws`` load generator
(``bench/loadgen``) to CPU 1, so the generator never competes with the
server; the CPU time each one used is reported beside every figure. This
project runs on runserver, gunicorn gthread and gevent, and uvicorn, every
scenario, and on granian and daphne, the headline ones. The
peers, Django Channels 4 + daphne and Flask-Sock on gunicorn gthread, run
every scenario; the reference points, Channels 4 + uvicorn, Flask-Sock on
gunicorn gevent, a bare ASGI application on uvicorn (the ceiling of any
application under uvicorn) and a bare websockets asyncio server (the
ceiling of the load generator), run the headline ones (``--quick`` leaves
them out). All are installed into ``bench/.venv-peers`` on first use.

In a full run, the headline echo (32 B, C=100) is measured three times on
every server, in turns, and each server's median is kept (the three figures
are printed beside it): on a shared machine the background noise then falls
on every server alike.

Results go to ``bench/results/``: ``latest.json`` (machine-readable),
``latest.md`` (the tables) and ``latest.png`` (a chart). Only 127.0.0.1 is
used; every server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = ROOT / ".venv" / "bin"
PEERS = BENCH / ".venv-peers" / "bin"
LOADGEN = BENCH / "loadgen"
RESULTS = BENCH / "results"
SERVER_CPU, LOADGEN_CPU = "0", "1"


@dataclass
class Server:
    name: str
    label: str
    argv: list[str]
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    peer: bool = False
    # A reference point beyond the required servers: runs only HEADLINE.
    reference: bool = False


# The scenarios behind the goals; reference servers run only these.
HEADLINE = ("echo 32 B C=100", "hold 5000", "broadcast 1000", "max broadcast")
# Measured three times, in turns across the servers, in a full run.
ECHO_HEADLINE = "echo 32 B C=100"
# Held by the gevent servers only: a thread per connection caps the others.
GEVENT_HOLD = "hold 10000"
GEVENT_WORKER_CONNECTIONS = 11200


def servers(port: int, search_api: str = "") -> list[Server]:
    bind = f"127.0.0.1:{port}"
    ours_env = {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_SEARCH_API": search_api,
    }
    gunicorn = [
        str(VENV / "gunicorn"),
        "--bind",
        bind,
        "--workers",
        "1",
        "--backlog",
        "4096",
    ]
    peer_gunicorn = [
        str(PEERS / "gunicorn"),
        "--bind",
        bind,
        "--workers",
        "1",
        "--backlog",
        "4096",
    ]
    threads = ["--threads", "6000", "--worker-connections", "10000"]
    daphne = ["-b", "127.0.0.1", "-p", str(port)]
    uvicorn = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backlog",
        "4096",
        "--log-level",
        "warning",
    ]
    return [
        Server(
            "runserver",
            "this project, runserver",
            [str(VENV / "python"), "manage.py", "runserver", "--noreload", bind],
            env=ours_env,
        ),
        Server(
            "gthread",
            "this project, gunicorn gthread",
            [*gunicorn, "-k", "gthread", *threads, "config.wsgi:application"],
            env=ours_env,
        ),
        Server(
            "gevent",
            "this project, gunicorn gevent",
            [
                *gunicorn,
                # The deployment's settings and hooks, whose "auto"
                # WEBSOCKET_MAX_CONNECTIONS keeps a tenth of worker_connections
                # for ordinary requests: 11,200 less 1,120 lets "hold 10000"
                # open all of its connections.
                "-c",
                str(ROOT / "deploy" / "gunicorn.conf.py"),
                "-k",
                "gevent",
                "--worker-connections",
                str(GEVENT_WORKER_CONNECTIONS),
                "config.wsgi:application",
            ],
            env=ours_env,
        ),
        Server(
            "uvicorn",
            "this project, uvicorn",
            [str(VENV / "uvicorn"), *uvicorn, "config.asgi:application"],
            env=ours_env,
        ),
        Server(
            "granian",
            "this project, granian",
            [
                str(VENV / "granian"),
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backlog",
                "4096",
                "--log-level",
                "warning",
                "config.asgi:application",
            ],
            env=ours_env,
            reference=True,
        ),
        Server(
            "daphne",
            "this project, daphne",
            [str(VENV / "daphne"), *daphne, "-v", "0", "config.asgi:application"],
            env=ours_env,
            reference=True,
        ),
        peer(
            "channels",
            "Channels 4 + daphne",
            [str(PEERS / "daphne"), *daphne, "channels_site.asgi:application"],
        ),
        peer(
            "channels-uvicorn",
            "Channels 4 + uvicorn",
            [str(PEERS / "uvicorn"), *uvicorn, "channels_site.asgi:application"],
            reference=True,
        ),
        peer(
            "asgi",
            "bare ASGI app, uvicorn (no Django)",
            [str(PEERS / "uvicorn"), *uvicorn, "asgi_app:app"],
            reference=True,
        ),
        peer(
            "flask-gthread",
            "Flask-Sock, gunicorn gthread",
            [*peer_gunicorn, "-k", "gthread", *threads, "flask_app:app"],
        ),
        peer(
            "flask-gevent",
            "Flask-Sock, gunicorn gevent",
            [
                *peer_gunicorn,
                "-k",
                "gevent",
                "--worker-connections",
                "10000",
                "flask_app:app",
            ],
            reference=True,
        ),
        peer(
            "websockets",
            "websockets asyncio (no Django)",
            [str(PEERS / "python"), "websockets_server.py", str(port)],
            reference=True,
        ),
    ]


def peer(name: str, label: str, argv: list[str], *, reference: bool = False) -> Server:
    """A server the project is compared with, run from ``bench/peers``."""
    return Server(
        name, label, argv, cwd=BENCH / "peers", peer=True, reference=reference
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


def ensure_tools() -> None:
    requirements = BENCH / "requirements-peers.txt"
    installed = PEERS.parent / "installed-requirements.txt"
    if not installed.exists() or installed.read_text() != requirements.read_text():
        print("installing the peers into bench/.venv-peers ...", flush=True)
        if not (PEERS / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(PEERS.parent)], check=True
            )
        subprocess.run(
            [str(PEERS / "pip"), "install", "-q", "-r", str(requirements)],
            check=True,
        )
        shutil.copyfile(requirements, installed)
    if not (LOADGEN / "node_modules" / "ws").exists():
        subprocess.run(["npm", "ci", "--silent"], cwd=LOADGEN, check=True)


class Running:
    """A server process, its worker and its resource use."""

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.port = port
        env = {**os.environ, "PYTHONPATH": str(ROOT), **server.env}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, server.argv),
            cwd=server.cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: a server that logs every dropped client
            # would fill a pipe nobody reads and stall.
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    err = self.log.read().decode(errors="replace")
                    self.stop()
                    raise RuntimeError(
                        f"{server.name} did not start:\n{err[-2000:]}"
                    ) from None
                time.sleep(0.1)
        time.sleep(0.5)

    def pids(self) -> list[int]:
        pids, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    children = task.read_text().split()
                except OSError:  # the thread ended meanwhile
                    continue
                queue.extend(int(child) for child in children)
        return pids

    def worker(self) -> int:
        """The process that serves the sockets (gunicorn's worker, not its master)."""
        pids = [p for p in self.pids() if "taskset" not in _cmdline(p)]
        # A child, where there is one: right after start the master can be
        # as large as its worker.
        children = [p for p in pids if p != self.process.pid] or pids
        return max(children, key=_rss_kib) if children else self.process.pid

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        """Kill the server's process group and wait until all of it is gone:
        a dying worker with thousands of threads can still hold the port."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        deadline = time.monotonic() + 30
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.log.close()


def _group_alive(pgid: int) -> bool:
    """Whether a process of group *pgid* still runs (zombies waiting for
    init to reap them hold no port)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kib(pid: int) -> int:
    return _status(pid, "VmRSS")


def _children_cpu_seconds() -> float:
    """CPU time used by this process's finished children (the generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    running: Running, options: dict[str, object], timeout: float
) -> dict[str, object]:
    """Run one load-generator scenario; sample the server's worker meanwhile
    (peak RSS and threads) and add its CPU use."""
    worker = running.worker()
    url = f"ws://127.0.0.1:{running.port}{options['path']}"
    argv = pinned(
        LOADGEN_CPU, ["node", "loadgen.mjs", json.dumps({**options, "url": url})]
    )
    cpu_before, started = running.cpu_seconds(), time.monotonic()
    children_before = _children_cpu_seconds()
    base_rss = peak_rss = _rss_kib(worker)
    peak_threads = 0
    with subprocess.Popen(
        argv, cwd=LOADGEN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as generator:
        while generator.poll() is None:
            if time.monotonic() - started > timeout:
                generator.kill()
                raise RuntimeError(f"load generator still running after {timeout} s")
            peak_rss = max(peak_rss, _rss_kib(worker))
            peak_threads = max(peak_threads, _status(worker, "Threads"))
            time.sleep(0.2)
        out, err = generator.communicate()
    wall = time.monotonic() - started
    if generator.returncode != 0:
        raise RuntimeError(f"load generator failed: {err[-2000:]}")
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    result["server_cpu_pct"] = round(
        100 * (running.cpu_seconds() - cpu_before) / wall, 1
    )
    generator_cpu = _children_cpu_seconds() - children_before
    result["loadgen_cpu_pct"] = round(100 * generator_cpu / wall, 1)
    result["server_base_rss_mib"] = round(base_rss / 1024, 1)
    result["server_peak_rss_mib"] = round(peak_rss / 1024, 1)
    result["server_peak_threads"] = peak_threads
    return result


def plan(quick: bool) -> list[tuple[str, dict[str, object]]]:
    seconds, warmup = (2, 1) if quick else (10, 1)
    runs: list[tuple[str, dict[str, object]]] = []
    for c in [100] if quick else [1, 10, 100]:
        runs.append(
            (
                f"echo 32 B C={c}",
                {
                    "scenario": "echo",
                    "path": "/echo/ws/",
                    "connections": c,
                    "seconds": seconds,
                    "warmup": warmup,
                    "size": 32,
                    "binary": False,
                },
            )
        )
    if not quick:
        for c in [1, 10, 100]:
            runs.append(
                (
                    f"echo 16 KiB binary C={c}",
                    {
                        "scenario": "echo",
                        "path": "/echo/ws/",
                        "connections": c,
                        "seconds": seconds,
                        "warmup": warmup,
                        "size": 16384,
                        "binary": True,
                    },
                )
            )
    for n in [1000] if quick else [1000, 5000, 10000]:
        runs.append(
            (
                f"hold {n}",
                {
                    "scenario": "connect",
                    "path": "/echo/ws/",
                    "connections": n,
                    "inflight": 200,
                    "hold": 2 if quick else 5,
                    "burstWindow": 10,
                },
            )
        )
    for m in [100] if quick else [100, 1000]:
        runs.append(
            (
                f"broadcast {m} @10/s",
                {
                    "scenario": "broadcast",
                    "path": "/broadcast/ws/",
                    "members": m,
                    "rate": 10,
                    "seconds": 3 if quick else 5,
                    "warmup": warmup,
                },
            )
        )
    runs.append(
        (
            "livesearch 1000 subscribers",
            {
                "scenario": "subscribe",
                "path": "/livesearch/ws/",
                "connections": 1000,
                "query": "django",
                "source": "hn",
                "seconds": 3 if quick else 10,
            },
        )
    )
    return runs


def search_api() -> Any:
    """The live search stand-in of the test suite, serving in this process."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from tests.search_api import SearchApi

    return SearchApi()


def max_broadcast_rate(
    running: Running, members: int, quick: bool
) -> dict[str, object]:
    """Double the rate until delivery is incomplete or p99 exceeds 500 ms."""
    best: dict[str, object] = {"members": members, "max_rate": None}
    for rate in [40, 80] if quick else [20, 40, 80, 160, 320]:
        options = {
            "scenario": "broadcast",
            "path": "/broadcast/ws/",
            "members": members,
            "rate": rate,
            "seconds": 2 if quick else 3,
            "warmup": 1,
        }
        try:
            result = measure(running, options, timeout=120)
        except RuntimeError:
            break  # the load generator could not keep up: its ceiling
        p99 = result["p99_ms"]
        if not isinstance(p99, (int, float)) or p99 > 500:
            break
        if result["delivered_ratio"] != 1:
            break
        best = {"members": members, "max_rate": rate, "p99_ms": result["p99_ms"]}
    return best


# bench/hostile.py's cases, in the order of the issue that set their goals.
HOSTILE_CASES = {
    "flood-reading": "(a) 1 MiB messages flooding a view that reads",
    "flood-not-reading": "(b) 1 MiB messages flooding a view that never reads",
    "flood-member": "(c) a group member flooding while another publishes at 10/s",
    "ping-flood": "(d) a ping flood that never reads its pongs",
    "fragments": "(e) 2-byte fragments of a message never finished",
}
# What one attacking connection may make the server hold under the default
# settings (docs/reference/settings.md: (Q + 3) x M + 128 KiB inbound, B
# outbound, with Q = 16, M = 1 MiB, B = 4 MiB), plus the goal's 10 MiB.
HOSTILE_BOUND_MIB = (16 + 3) * 1 + 0.125 + 4 + 10


def hostile_case(running: Running, case: str, quick: bool) -> dict[str, object]:
    """The others' echo p99 alone, then with one attacker of *case* (and,
    for a flooding member, the publish p99 to the other members); the
    worker's RSS growth during the attack and 10 s after it ended."""
    seconds = 3 if quick else 5
    echo = {
        "scenario": "echo",
        "path": "/echo/ws/",
        "connections": 100,
        "seconds": seconds,
        "warmup": 1,
        "size": 32,
        "binary": False,
    }
    alone = measure(running, echo, timeout=120)
    worker = running.worker()
    before = _rss_kib(worker)
    member = case == "flood-member"
    attack_seconds = 2 + (seconds + 4) * (2 if member else 1)
    attacker = subprocess.Popen(
        pinned(
            LOADGEN_CPU,
            [
                str(VENV / "python"),
                str(BENCH / "hostile.py"),
                case,
                str(running.port),
                str(attack_seconds),
            ],
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        attacked = measure(running, echo, timeout=120)
        peak = float(attacked["server_peak_rss_mib"])  # type: ignore[arg-type]
        result: dict[str, object] = {
            "rss_before_mib": round(before / 1024, 1),
            "echo_p99_alone_ms": alone["p99_ms"],
            "echo_p99_attacked_ms": attacked["p99_ms"],
        }
        if member:
            cast = measure(
                running,
                {
                    "scenario": "broadcast",
                    "path": "/broadcast/ws/",
                    "members": 100,
                    "rate": 10,
                    "seconds": seconds,
                    "warmup": 1,
                },
                timeout=120,
            )
            result["publish_p99_ms"] = cast["p99_ms"]
            result["publish_delivered_ratio"] = cast["delivered_ratio"]
            peak = max(peak, float(cast["server_peak_rss_mib"]))  # type: ignore[arg-type]
        out, _ = attacker.communicate(timeout=attack_seconds + 30)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    time.sleep(10)
    result["rss_growth_during_mib"] = round(peak - before / 1024, 1)
    result["rss_growth_after_mib"] = round((_rss_kib(worker) - before) / 1024, 1)
    result["attacker"] = json.loads(out.strip().splitlines()[-1]) if out else None
    return result


def run_server(
    server: Server,
    port: int,
    api: Any,
    quick: bool,
    prefixes: list[str] | None,
    repeat: int = 1,
) -> dict[str, object]:
    """Every chosen scenario against *server*, each on a fresh process; the
    hold scenarios *repeat* times."""
    figures: dict[str, object] = {}
    for title, options in plan(quick):
        if prefixes and not any(_chosen(title, p) for p in prefixes):
            continue
        if server.peer and title.startswith("livesearch"):
            continue
        if server.reference and not title.startswith(HEADLINE):
            continue
        if title == GEVENT_HOLD and server.name != "gevent":
            continue
        if title.startswith("hold") and repeat > 1:
            figures[title] = repeat_burst(server, port, api, title, options, repeat)
        else:
            figures[title] = run_scenario(server, port, api, title, options)
    if not prefixes or "max" in prefixes:
        members = 100 if quick else 1000
        figures[f"max broadcast rate {members}"] = on_fresh_process(
            server,
            port,
            f"max broadcast rate {members}",
            lambda running: max_broadcast_rate(running, members, quick),
        )
    fanout = f"livesearch-fanout {FANOUT_CLIENTS} clients"
    wanted = any(fanout.startswith(p) for p in prefixes) if prefixes else True
    if wanted and not (server.peer or server.reference):
        figures[fanout] = on_fresh_process(
            server,
            port,
            fanout,
            lambda running: livesearch_fanout(running, api, 3 if quick else 5),
        )
    members = 100 if quick else CHURN_MEMBERS
    churn = f"presence-churn {members} members"
    wanted = any(churn.startswith(p) for p in prefixes) if prefixes else True
    if wanted and not (server.peer or server.reference):
        with chat_database() as url:
            figures[churn] = on_fresh_process(
                dataclasses.replace(server, env={**server.env, "DATABASE_URL": url}),
                port,
                churn,
                lambda running: presence_churn(running, members, 5 if quick else 20),
            )
    wanted = "hostile" in prefixes if prefixes else not quick
    if wanted and not (server.peer or server.reference):
        for case in HOSTILE_CASES:
            title = f"hostile {HOSTILE_CASES[case]}"
            figures[title] = on_fresh_process(
                server,
                port,
                title,
                lambda running, case=case: hostile_case(running, case, quick),
            )
    return figures


def _chosen(title: str, prefix: str) -> bool:
    """Whether *prefix* picks scenario *title*: "hold" picks every hold
    scenario, "hold 1000" the one of 1,000 connections, not "hold 10000"."""
    rest = title[len(prefix) :] if title.startswith(prefix) else None
    return rest is not None and not rest[:1].isdigit()


FANOUT_CLIENTS = 1000


def livesearch_fanout(running: Running, api: Any, seconds: float) -> dict[str, object]:
    """``FANOUT_CLIENTS`` live search clients, each following a query of its
    own (bench/fanout.py), twice in a row: the worker's threads and RSS
    before, at the busiest and 5 s after each round (a leak grows from one
    round to the next; memory the allocator keeps does not), and the
    upstream requests."""
    worker = running.worker()
    rss, threads = [_rss_kib(worker)], [_status(worker, "Threads")]
    requests = len(api.requests())
    result: dict[str, object] = {}
    argv = [
        str(VENV / "python"),
        str(BENCH / "fanout.py"),
        str(running.port),
        str(FANOUT_CLIENTS),
        str(seconds),
    ]
    for _ in range(2):
        peak_rss, peak_threads = rss[-1], threads[-1]
        started = time.monotonic()
        with subprocess.Popen(
            pinned(LOADGEN_CPU, argv), stdout=subprocess.PIPE, text=True
        ) as clients:
            while clients.poll() is None:
                if time.monotonic() - started > seconds + 120:
                    clients.kill()
                    raise RuntimeError("the fan-out clients are still running")
                peak_rss = max(peak_rss, _rss_kib(worker))
                peak_threads = max(peak_threads, _status(worker, "Threads"))
                time.sleep(0.2)
            out, _ = clients.communicate()
        if clients.returncode != 0:
            raise RuntimeError(f"the fan-out clients failed ({clients.returncode})")
        result.update(json.loads(out.strip().splitlines()[-1]))
        time.sleep(5)
        rss += [peak_rss, _rss_kib(worker)]
        threads += [peak_threads, _status(worker, "Threads")]
    result["rss_mib"] = [round(kib / 1024, 1) for kib in rss]
    result["threads"] = threads
    result["threads_per_1000_clients"] = round(
        (max(threads) - threads[0]) * 1000 / FANOUT_CLIENTS
    )
    result["upstream_requests"] = len(api.requests()) - requests
    return result


CHURN_MEMBERS, CHURNERS, CHURN_ROOM = 500, 8, "churn"


@contextlib.contextmanager
def chat_database() -> Iterator[str]:
    """A fresh SQLite database, migrated, with the churn's room in it (rooms
    are made by the form, never by connecting): its DATABASE_URL. The
    developer's db.sqlite3 is left alone."""
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as directory:
        url = f"sqlite:///{directory}/chat.sqlite3"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": url,
        }
        create = (
            "from apps.chat.models import Room; "
            f"Room.objects.create(name={CHURN_ROOM!r})"
        )
        for command in (["migrate", "--noinput"], ["shell", "-c", create]):
            subprocess.run(
                [str(VENV / "python"), "manage.py", *command, "-v", "0"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        yield url


def presence_churn(running: Running, members: int, seconds: float) -> dict[str, object]:
    """*members* idle in one chat room while ``CHURNERS`` clients join and
    leave it for *seconds* (bench/churn.py): the payload bytes the idle
    members received, per presence change (a join or a leave) and per member."""
    argv = [
        str(VENV / "python"),
        str(BENCH / "churn.py"),
        str(running.port),
        CHURN_ROOM,
        str(members),
        str(CHURNERS),
        str(seconds),
    ]
    try:
        clients = subprocess.run(
            pinned(LOADGEN_CPU, argv),
            capture_output=True,
            text=True,
            timeout=seconds + 300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError("the churn clients are still running") from None
    if clients.returncode != 0:
        raise RuntimeError(f"the churn clients failed: {clients.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(clients.stdout.strip().splitlines()[-1])
    changes = result["joins"] + result["leaves"]
    sent = result["bytes_during_churn"]
    result["bytes_per_change"] = round(sent / max(1, changes))
    result["bytes_per_member_per_change"] = round(sent / max(1, changes) / members, 2)
    result["bytes_per_cycle"] = round(sent / max(1, result["leaves"]))
    return result


def run_scenario(
    server: Server, port: int, api: Any, title: str, options: dict[str, object]
) -> dict[str, object]:
    """One load-generator scenario against a fresh process of *server*."""

    def scenario(running: Running) -> dict[str, object]:
        before = api.count("django")
        result = measure(running, options, timeout=300)
        if title.startswith("livesearch"):
            result["upstream_requests"] = api.count("django") - before
        return result

    return on_fresh_process(server, port, title, scenario)


def on_fresh_process(
    server: Server,
    port: int,
    title: str,
    work: Callable[[Running], dict[str, object]],
) -> dict[str, object]:
    """Start *server*, run *work* against it, stop it; print and return the
    figures (an error the generator or server reported becomes one)."""
    began = time.monotonic()
    running = Running(server, port)
    try:
        result = work(running)
    except RuntimeError as error:
        result = {"error": str(error)[-300:]}
    finally:
        running.stop()
    took = time.monotonic() - began
    print(f"   {title} ({took:.0f} s): {result}", flush=True)
    return result


def repeat_headline_echo(
    chosen: list[tuple[Server, int]], api: Any, results: dict[str, Any]
) -> None:
    """Measure the headline echo twice more on every server, in turns, and
    keep each server's median run: the machine's background noise then
    falls on all servers alike, not on whichever ran during a bad minute."""
    options = dict(plan(quick=False))[ECHO_HEADLINE]
    runs: dict[str, list[dict[str, object]]] = {}
    for turn in range(2):
        print(f"== {ECHO_HEADLINE}, turn {turn + 2} of 3", flush=True)
        for server, port in chosen:
            figures = results["servers"][server.label]
            if ECHO_HEADLINE not in figures or "error" in figures[ECHO_HEADLINE]:
                continue
            runs.setdefault(server.label, [figures[ECHO_HEADLINE]])
            result = run_scenario(server, port, api, ECHO_HEADLINE, options)
            if "error" not in result:
                runs[server.label].append(result)
    for label, measured in runs.items():
        measured.sort(key=_rate)
        median = dict(measured[len(measured) // 2])
        median["runs_messages_per_s"] = [round(_rate(r)) for r in measured]
        results["servers"][label][ECHO_HEADLINE] = median


# The burst goal: every held connection answered within this many seconds.
BURST_GOAL_SECONDS = 2.0


def repeat_burst(
    server: Server,
    port: int,
    api: Any,
    title: str,
    options: dict[str, object],
    repeat: int,
) -> dict[str, object]:
    """Run a hold scenario *repeat* times, each on a fresh process, and keep
    the median run's figures with the time every run took to answer the
    whole burst (``None`` for a run that left some unanswered) and how many
    met the goal: all connections opened and answered within
    ``BURST_GOAL_SECONDS``."""
    runs = []
    for turn in range(repeat):
        result = run_scenario(server, port, api, f"{title}, run {turn + 1}", options)
        if "error" not in result:
            runs.append(result)
    if not runs:
        return {"error": f"all {repeat} runs failed"}
    runs.sort(key=_burst_sort_key)
    median = dict(runs[len(runs) // 2])
    median["burst_runs"] = [
        {
            "opened": r["opened"],
            "answered": r["answered_burst"],
            "seconds_to_all": _seconds_to_all(r),
        }
        for r in runs
    ]
    median["burst_repeat"] = repeat
    return median


def _seconds_to_all(r: dict[str, Any]) -> float | None:
    """How long a run took to answer every connection it was asked to open;
    ``None`` if some were not opened or not answered."""
    connections = r["connections"]
    if r["opened"] != connections or r["answered_burst"] != connections:
        return None
    return float(r["burst_seconds"])


def _burst_sort_key(r: dict[str, Any]) -> tuple[float, float]:
    """Fastest complete run first, then incomplete ones, most answered first."""
    seconds = _seconds_to_all(r)
    if seconds is None:
        return (float("inf"), -float(r["answered_burst"]))
    return (seconds, 0.0)


def _burst_repeated(r: dict[str, Any]) -> str:
    """Repeated runs: how many met the goal, and min / median / max of the
    time to answer all (">w s" for a run that did not within its window)."""
    runs = r.get("burst_runs")
    if not runs:
        seconds = _seconds_to_all(r)
        met = seconds is not None and seconds <= BURST_GOAL_SECONDS
        return f"{int(met)}/1 run"
    times = [run["seconds_to_all"] for run in runs]
    met = sum(1 for t in times if t is not None and t <= BURST_GOAL_SECONDS)
    failed = int(r["burst_repeat"]) - len(runs)
    picks = [times[0], times[len(times) // 2], times[-1]]
    spread = " / ".join("not all" if t is None else f"{t:.2f}" for t in picks)
    text = f"{met}/{r['burst_repeat']} runs; {spread} s"
    if failed:
        text += f" ({failed} failed)"
    return text


def _rate(result: dict[str, object]) -> float:
    rate = result["messages_per_s"]
    assert isinstance(rate, (int, float))
    return float(rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller run, under 3 minutes"
    )
    parser.add_argument("--servers", help="comma-separated subset of server names")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the hold (burst) scenarios N times, each on a fresh process,"
        " and report min / median / max and how many met the goal",
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated prefixes: echo,hold,broadcast,livesearch"
        " (livesearch-fanout alone),max,hostile,presence-churn",
    )
    args = parser.parse_args()
    ensure_tools()
    chosen = args.servers.split(",") if args.servers else None
    prefixes = args.scenarios.split(",") if args.scenarios else None
    results: dict[str, object] = {
        "machine": machine(),
        "quick": args.quick,
        "servers": {},
    }
    started = time.monotonic()
    ran: list[tuple[Server, int]] = []
    with search_api() as api:
        for server in servers(0):
            if chosen and server.name not in chosen:
                continue
            if (
                args.quick
                and chosen is None
                and server.name in ("flask-gevent", "websockets")
            ):
                continue
            port = free_port()
            server = next(s for s in servers(port, api.url) if s.name == server.name)
            print(f"== {server.label}", flush=True)
            figures = run_server(server, port, api, args.quick, prefixes, args.repeat)
            results["servers"][server.label] = figures  # type: ignore[index]
            ran.append((server, port))
        if not args.quick:
            repeat_headline_echo(ran, api, results)
    results["seconds"] = round(time.monotonic() - started)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (RESULTS / "latest.md").write_text(table)
    print(table)
    chart(results)
    return 0


def machine() -> dict[str, object]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _fmt(value: object, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


HEADERS = {
    "echo": ["msgs/s", "p50 ms", "p90 ms", "p99 ms", "server CPU", "generator CPU"],
    "hold": [
        "handshakes/s",
        "opened",
        "answered the burst",
        f"all answered within {BURST_GOAL_SECONDS:g} s; min / median / max",
        "KiB/conn",
        "threads",
    ],
    "broadcast": ["delivered", "p50 ms", "p99 ms"],
    "max": ["max rate/s (all delivered, p99 ≤ 500 ms)", "p99 ms"],
    "livesearch": ["subscribers", "seconds", "pushes received", "upstream requests"],
    "livesearch-fanout": [
        "clients: got results / refused",
        "threads before / peak / after, twice",
        "threads per 1,000 clients",
        "RSS MiB before / peak / after, twice",
        "upstream requests",
    ],
    "presence-churn": [
        "members",
        "churn cycles (join + leave), seconds",
        "presence events per member: min / mean / max",
        "bytes per presence change",
        "bytes per member per change",
        "bytes per cycle",
        "bytes to the members while they joined",
    ],
    "hostile": [
        "RSS growth during / 10 s after, MiB",
        f"bound {HOSTILE_BOUND_MIB:g} MiB",
        "others' echo p99 alone → attacked, ms",
        "≤ 2×",
        "publish p99 ms (≤ 50)",
        "attacker: connections, closes",
    ],
}


def _answered(r: dict[str, Any]) -> str:
    burst = f"{r['answered_burst']}/{r['alive_after_hold']}"
    return f"{burst} in {_fmt(r['burst_seconds'], 2)} s"


def _kib_per_connection(r: dict[str, Any]) -> float:
    grown = float(r["server_peak_rss_mib"]) - float(r["server_base_rss_mib"])
    return 1024 * grown / max(1, int(r["opened"]))


def _runs(r: dict[str, object]) -> str:
    """The three runs behind a median, smallest first."""
    runs = r.get("runs_messages_per_s")
    if not isinstance(runs, list) or len(runs) < 2:
        return ""
    return " (" + " / ".join(f"{n:,}" for n in runs) + ")"


def _cells(kind: str, r: dict[str, object]) -> list[str]:
    if kind == "echo":
        return [
            _fmt(r["messages_per_s"]) + _runs(r),
            *(_fmt(r[k], 2) for k in ("p50_ms", "p90_ms", "p99_ms")),
            f"{_fmt(r['server_cpu_pct'])}%",
            f"{_fmt(r.get('loadgen_cpu_pct'))}%",
        ]
    if kind == "hold":
        return [
            _fmt(r["handshakes_per_s"]),
            f"{r['opened']}/{r['connections']}",
            _answered(r),
            _burst_repeated(r),
            _fmt(_kib_per_connection(r)),
            _fmt(r["server_peak_threads"]),
        ]
    if kind == "broadcast":
        ratio = 100 * float(r["delivered_ratio"] or 0)  # type: ignore[arg-type]
        return [
            f"{r['delivered']}/{r['expected']} ({ratio:.1f}%)",
            _fmt(r["p50_ms"], 1),
            _fmt(r["p99_ms"], 1),
        ]
    if kind == "livesearch":
        return [
            _fmt(r["subscribers"]),
            _fmt(r["seconds"]),
            _fmt(r["result_pushes"]),
            _fmt(r.get("upstream_requests")),
        ]
    if kind == "livesearch-fanout":
        return _fanout_cells(r)
    if kind == "hostile":
        return _hostile_cells(r)
    if kind == "presence-churn":
        return _churn_cells(r)
    return [str(r.get("max_rate") or "none sustainable"), _fmt(r.get("p99_ms"), 1)]


def _fanout_cells(r: dict[str, Any]) -> list[str]:
    by_event = r["clients_by_event"]
    refused = sum(n for kind, n in by_event.items() if kind.startswith("error"))
    return [
        f"{_fmt(by_event.get('results', 0))} / {_fmt(refused)}"
        + (f" ({r['failed']} failed to connect)" if r["failed"] else ""),
        " / ".join(_fmt(n) for n in r["threads"]),
        _fmt(r["threads_per_1000_clients"]),
        " / ".join(_fmt(n, 1) for n in r["rss_mib"]),
        _fmt(r["upstream_requests"]),
    ]


def _churn_cells(r: dict[str, Any]) -> list[str]:
    low, mean, high = r["presence_changes_per_member"]
    seconds = _fmt(r["churn_seconds"], 1)
    return [
        _fmt(r["members"]),
        f"{_fmt(r['leaves'])} by {r['churners']} clients in {seconds} s",
        f"{_fmt(low)} / {_fmt(mean, 1)} / {_fmt(high)}",
        _fmt(r["bytes_per_change"]),
        _fmt(r["bytes_per_member_per_change"], 2),
        _fmt(r["bytes_per_cycle"]),
        _fmt(r["bytes_while_joining"]),
    ]


def _hostile_cells(r: dict[str, Any]) -> list[str]:
    during, after = r["rss_growth_during_mib"], r["rss_growth_after_mib"]
    alone, attacked = r["echo_p99_alone_ms"], r["echo_p99_attacked_ms"]
    ratio = attacked / alone if alone and attacked is not None else None
    attacker = r.get("attacker") or {}
    closes = ", ".join(f"{n}× {code}" for code, n in attacker.get("closes", {}).items())
    publish = r.get("publish_p99_ms")
    return [
        f"{_fmt(during, 1)} / {_fmt(after, 1)}",
        "met" if max(during, after) <= HOSTILE_BOUND_MIB else "**missed**",
        f"{_fmt(alone, 1)} → {_fmt(attacked, 1)}",
        f"{_fmt(ratio, 1)}× "
        + ("met" if ratio is not None and ratio <= 2 else "**missed**"),
        "–"
        if publish is None
        else f"{_fmt(publish, 1)} " + ("met" if publish <= 50 else "**missed**"),
        f"{attacker.get('connections', '–')}, {closes or 'none'}",
    ]


def markdown(results: dict[str, object]) -> str:
    by_server = results["servers"]
    assert isinstance(by_server, dict)
    titles: list[str] = []
    for figures in by_server.values():
        titles += [t for t in figures if t not in titles]
    lines = [f"Machine: {results['machine']}", "", *summary(by_server), ""]
    for title in titles:
        kind = title.split()[0]
        header = ["server", *HEADERS[kind]]
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |"]
        lines.append("|---" + "|---:" * (len(header) - 1) + "|")
        for label, figures in by_server.items():
            if title in figures:
                r = figures[title]
                cells = (
                    [f"error: {' '.join(r['error'].split())[:80]}"]
                    if "error" in r
                    else _cells(kind, r)
                )
                lines.append("| " + " | ".join([label, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def summary(by_server: dict[str, Any]) -> list[str]:
    """One row per server with the figures the goals are set on."""
    lines = [
        "### Summary",
        "",
        "| server | echo 32 B C=100 msgs/s | 5,000 held: answered the burst"
        " | KiB/conn | broadcast 1,000 @10/s: delivered, p99"
        " | max broadcast rate to 1,000 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, figures in by_server.items():
        echo = figures.get(ECHO_HEADLINE, {})
        hold = figures.get("hold 5000", {})
        cast = figures.get("broadcast 1000 @10/s", {})
        top = figures.get("max broadcast rate 1000", {})
        cells = [
            _fmt(echo.get("messages_per_s")),
            _answered(hold)
            + (f" ({_burst_repeated(hold)})" if "burst_runs" in hold else "")
            if "answered_burst" in hold
            else "–",
            _fmt(_kib_per_connection(hold)) if "answered_burst" in hold else "–",
            f"{_fmt(100 * cast['delivered_ratio'])}%, {_fmt(cast['p99_ms'])} ms"
            if cast.get("delivered_ratio") is not None
            else "–",
            _max_rate(top),
        ]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def _max_rate(figures: dict[str, Any]) -> str:
    """A rate found, "none sustainable" if measured without one, "–" if the
    scenario did not run."""
    if "max_rate" not in figures:
        return "–"
    return f"{figures['max_rate']}/s" if figures["max_rate"] else "none sustainable"


def chart(results: dict[str, object]) -> None:
    python = PEERS / "python"
    script = BENCH / "chart.py"
    subprocess.run(
        [
            str(python),
            str(script),
            str(RESULTS / "latest.json"),
            str(RESULTS / "latest.png"),
        ],
        check=False,
    )


if __name__ == "__main__":
    sys.exit(main())
