"""Soak test: many WebSocket connections with steady traffic, watching the
server's memory, threads and file descriptors for a trend.

    python bench/soak.py                          # 1,000 connections, 1 minute
    python bench/soak.py --connections 200 --minutes 10
    python bench/soak.py --server gunicorn --compression none

Starts ``manage.py runserver --noreload`` (or gunicorn with the gthread
worker) on a free 127.0.0.1 port, opens the connections to ``/echo/ws/``,
and has each send a message and check its echo every ``--period`` seconds.
Every ``--interval`` seconds it samples the server's RSS, thread count and
open file descriptors from ``/proc/<pid>`` and prints a row. Samples taken
before every connection is open and one interval more are warm-up. The exit
status is 1 if, after warm-up, the average of the last quarter of the
samples is more than ``--tolerance`` (10 %) above the first quarter's for
any of the three, 2 if connections failed or echoes went wrong, else 0.
The server is stopped by its PID (SIGTERM, then SIGKILL). Not part of the
test suite; Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

ROOT = Path(__file__).resolve().parent.parent
PATH = "/echo/ws/"
# Handshakes in flight at once: the connections open within seconds without
# a burst of 1,000 SYNs on the listen queue.
CONNECTING_AT_ONCE = 32


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class Sample:
    elapsed: float
    open: int
    echoes: int
    rss: int
    threads: int
    fds: int


@dataclass
class Traffic:
    """What the clients saw; updated by the client tasks."""

    open: int = 0
    echoes: int = 0
    errors: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(kind: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    python = sys.executable
    if kind == "runserver":
        args = [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    else:
        args = [
            *(python, "-m", "gunicorn", "--worker-class", "gthread"),
            *("--workers", "1", "--threads", "2000", "--bind", f"127.0.0.1:{port}"),
            "config.wsgi",
        ]
    with log.open("wb") as output:
        # Output goes to a file: a pipe nobody reads would fill up and block
        # the server on its request log.
        return subprocess.Popen(args, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)


def serving_pid(process: subprocess.Popen[bytes], kind: str) -> int:
    """The PID that serves connections: gunicorn's single worker, else the
    runserver process itself (no autoreloader child with --noreload)."""
    if kind == "runserver":
        return process.pid
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    pids = children.read_text().split() if children.exists() else []
    return int(pids[0]) if pids else process.pid


def wait_until_listening(
    process: subprocess.Popen[bytes], port: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)


def usage(pid: int) -> tuple[int, int, int]:
    """RSS in bytes, threads and open file descriptors of process *pid*."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


async def client(
    url: str,
    n: int,
    traffic: Traffic,
    stop: asyncio.Event,
    gate: asyncio.Semaphore,
    args: argparse.Namespace,
) -> None:
    compression = None if args.compression == "none" else "deflate"
    try:
        async with gate:
            websocket: ClientConnection = await connect(
                url,
                compression=compression,
                open_timeout=args.timeout,
                ping_interval=None,  # the server pings; the client answers
                close_timeout=args.timeout,
                proxy=None,
            )
        traffic.open += 1
        try:
            await asyncio.sleep(random.uniform(0, args.period))  # spread the load
            i = 0
            while not stop.is_set():
                message = f"{n}:{i}:" + "x" * args.size
                await websocket.send(message)
                echo = await asyncio.wait_for(websocket.recv(), args.timeout)
                if echo != message:
                    traffic.errors.append(f"connection {n}: wrong echo {echo!r:.40}")
                    return
                traffic.echoes += 1
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.period)
        finally:
            traffic.open -= 1
            await websocket.close()
    except (OSError, TimeoutError, WebSocketException) as err:
        traffic.errors.append(f"connection {n}: {type(err).__name__}: {err}")


async def soak(
    pid: int, port: int, args: argparse.Namespace
) -> tuple[list[Sample], float, Traffic]:
    traffic = Traffic()
    stop = asyncio.Event()
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    url = f"ws://127.0.0.1:{port}{PATH}"
    started = time.monotonic()
    tasks = [
        asyncio.create_task(client(url, n, traffic, stop, gate, args))
        for n in range(args.connections)
    ]
    say(f"{'s':>6} {'open':>6} {'echoes':>8} {'RSS MiB':>8} {'threads':>8} {'fds':>6}")
    samples: list[Sample] = []
    warm_until: float | None = None
    end = started + args.minutes * 60
    while time.monotonic() < end:
        await asyncio.sleep(min(args.interval, max(0.0, end - time.monotonic())))
        rss, threads, fds = usage(pid)
        sample = Sample(
            time.monotonic() - started, traffic.open, traffic.echoes, rss, threads, fds
        )
        samples.append(sample)
        say(
            f"{sample.elapsed:6.0f} {sample.open:6} {sample.echoes:8} "
            f"{rss / 2**20:8.1f} {threads:8} {fds:6}"
        )
        if (
            warm_until is None
            and traffic.open + len(traffic.errors) >= args.connections
        ):
            warm_until = sample.elapsed + args.interval
    stop.set()
    await asyncio.wait(tasks, timeout=args.timeout * 2)
    for task in tasks:
        task.cancel()
    return samples, warm_until or float("inf"), traffic


def trend(samples: list[Sample], warm_until: float, tolerance: float) -> list[str]:
    """Metrics whose last-quarter average exceeds the first quarter's."""
    settled = [s for s in samples if s.elapsed >= warm_until]
    quarter = len(settled) // 4
    if quarter == 0:
        return [f"too few samples after warm-up ({len(settled)}); run longer"]
    rising = []
    for name in ("rss", "threads", "fds"):
        first = sum(getattr(s, name) for s in settled[:quarter]) / quarter
        last = sum(getattr(s, name) for s in settled[-quarter:]) / quarter
        change = (last - first) / first if first else 0.0
        say(f"{name:8} first quarter {first:12.0f}  last {last:12.0f}  {change:+.1%}")
        if change > tolerance:
            rising.append(f"{name} rose {change:.1%} (> {tolerance:.0%})")
    return rising


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--server", choices=["runserver", "gunicorn"], default="runserver"
    )
    parser.add_argument(
        "--period",
        type=float,
        default=1.0,
        help="seconds between a connection's messages",
    )
    parser.add_argument("--size", type=int, default=64, help="message padding in bytes")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between samples"
    )
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--compression", choices=["deflate", "none"], default="deflate")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    # Each connection costs a file descriptor here and one in the server.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 2 * args.connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        process = start_server(args.server, port, log)
        try:
            wait_until_listening(process, port, args.timeout * 3)
            pid = serving_pid(process, args.server)
            say(
                f"{args.server} (PID {pid}) on 127.0.0.1:{port}: {args.connections} "
                f"connections to {PATH}, one message each per {args.period:g} s, "
                f"for {args.minutes:g} min"
            )
            samples, warm_until, traffic = asyncio.run(soak(pid, port, args))
        except RuntimeError as err:
            say(f"{err}; its output:\n{log.read_text(errors='replace')[-4000:]}")
            return 2
        finally:
            stop_server(process)

    say(f"warm-up until {warm_until:.0f} s; {traffic.echoes} echoes")
    rising = trend(samples, warm_until, args.tolerance)
    for error in traffic.errors[:10]:
        say(f"error: {error}")
    if traffic.errors:
        say(f"{len(traffic.errors)} connections failed")
        return 2
    if rising:
        say("FAIL: " + "; ".join(rising))
        return 1
    say("OK: no upward trend")
    return 0


if __name__ == "__main__":
    sys.exit(main())
