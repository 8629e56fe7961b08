"""A throwaway PostgreSQL 15 for tests: initdb in a temp dir, loopback only, always stopped.

initdb and postgres refuse to run as root, so when the tests run as root (as in CI) both run as
``nobody`` with the temp dir handed over to it. The server listens on 127.0.0.1 on a free port
and on a unix socket inside the temp dir, with fsync off: the data is worth nothing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg

BINDIR = Path(os.environ.get("LAB_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
READY_SECONDS = 20.0
STOP_SECONDS = 10.0


class PgUnavailable(Exception):
    """The binaries are missing: the caller skips, it is not a failure."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in ``base``; :meth:`start`/:meth:`stop` may be called repeatedly
    (same data dir, same port), which is how tests simulate a database restart."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        self.sockdir = base / "sock"
        self.log = base / "postgres.log"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            os.chown(base, nobody.pw_uid, nobody.pw_gid)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def initdb(self) -> None:
        self.sockdir.mkdir()
        if self._run_as:
            os.chown(self.sockdir, self._run_as["user"], self._run_as["group"])
        result = subprocess.run(
            [
                str(BINDIR / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            check=False,
            cwd=self.base,
            **self._run_as,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace')}")

    def start(self) -> None:
        """Start the server and return once it accepts connections (or raise with its log)."""
        log = self.log.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(BINDIR / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.sockdir}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.base,
                **self._run_as,
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL not ready: {exc}\n{self.log_tail()}") from exc
            # Doubles as the poll interval and as the check that it did not die on startup.
            with suppress(subprocess.TimeoutExpired):
                code = self.process.wait(timeout=0.05)
                raise RuntimeError(f"PostgreSQL exited with {code}\n{self.log_tail()}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort sessions, clean stop), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def running_postgres() -> Iterator[PgServer]:
    """A started throwaway server, stopped and deleted on exit whatever happens.

    Raises :class:`PgUnavailable` when the PostgreSQL binaries are not installed.
    """
    for tool in ("initdb", "postgres"):
        if not (BINDIR / tool).exists():
            raise PgUnavailable(f"{BINDIR / tool} not found (install postgresql-15)")
    # Not under pytest's tmp_path: its parents are 0700 root, which nobody cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="labctl-pg-"))
    server = PgServer(base)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def create_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        try:
            # FORCE ends sessions a failed test left open (PostgreSQL 13+).
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.errors.SyntaxError:
            # CockroachDB has no FORCE and drops a database with open sessions anyway.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" CASCADE')


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name`` (query string kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))
