"""A throwaway PostgreSQL server for the tests that need the real thing."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from django_websocket.tests.conftest import TIMEOUT, free_port

HOST = "127.0.0.1"

PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda path: float(path.parent.name),  # the newest installed version
    default=None,
)


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port, stopped by PID.

    PostgreSQL refuses to run as root, so under root the cluster belongs to
    the ``postgres`` user. The site connects over TCP with a password, as in
    production; the fixture itself uses the Unix socket in ``directory``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.url = f"postgres://starter:{self.password}@{HOST}:{self.port}/starter"
        self.process: subprocess.Popen[bytes] | None = None
        as_root = os.geteuid() == 0
        self._user = {"user": "postgres", "group": "postgres"} if as_root else {}
        directory.mkdir()
        if as_root:
            shutil.chown(directory, "postgres", "postgres")

    def start(self) -> None:
        data = self.directory / "data"
        self._run([PG_BIN / "initdb", "-D", data, "-U", "postgres", "-E", "UTF8",
                   "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "--no-sync"])  # fmt: skip
        postgres = [PG_BIN / "postgres", "-D", data, "-p", str(self.port),
                    "-k", self.directory, "-c", f"listen_addresses={HOST}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off"]  # fmt: skip
        with open(self.directory / "postgres.log", "wb") as log:
            self.process = subprocess.Popen(
                postgres,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                **self._user,
            )
        deadline = time.monotonic() + TIMEOUT * 2
        while True:
            try:
                admin = self._connect()
                break
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log_text = (self.directory / "postgres.log").read_text()
                    raise RuntimeError(f"postgres did not start:\n{log_text}") from None
                time.sleep(0.1)
        # What docs/deploy.md does with createuser and createdb.
        with admin:
            admin.execute(
                sql.SQL("CREATE ROLE starter LOGIN PASSWORD {}").format(self.password)
            )
            admin.execute("CREATE DATABASE starter OWNER starter")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(TIMEOUT * 2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
            self.process = None

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=str(self.directory),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=2,
        )

    def _run(self, args: list[Any]) -> None:
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            timeout=TIMEOUT * 6,
            cwd=self.directory,
            **self._user,
        )

    def create_database(self, name: str) -> str:
        """A new empty database owned by the site's role; its URL."""
        with self._connect() as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER starter").format(sql.Identifier(name))
            )
        return self.url.rsplit("/", 1)[0] + f"/{name}"
