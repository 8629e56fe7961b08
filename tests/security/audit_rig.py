"""Shared by the audit tamper and crash tests: a database per test on both backends, labd as a
real process on it, and an attacker's hands on the audit table (raw SQL, the keyless public
chain function)."""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from lab.model import AuditEntry
from lab.store import open_store
from lab.store.auditchain import chain
from tests.e2e.daemons import labd_env
from tests.store.pg_server import (
    PgServer,
    PgUnavailable,
    create_database,
    database_url,
    drop_database,
    running_postgres,
)

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    try:
        with running_postgres() as server:
            yield server
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL tests need PostgreSQL 15 binaries: {exc}")


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """labd's database URL: a SQLite file in the test's dir, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'labd' / 'labd.db'}"
        return
    server: PgServer = request.getfixturevalue("pg")
    name = f"a_{secrets.token_hex(6)}"
    create_database(server.url(), name)
    try:
        yield database_url(server.url(), name)
    finally:
        drop_database(server.url(), name)


class Attacker:
    """Someone who can write the database but holds no key: raw SQL on the audit table."""

    def __init__(self, url: str) -> None:
        self.url = url

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.executemany(sql, [params])

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.url.startswith("sqlite:///"):
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                with conn:
                    conn.executemany(sql, rows)
            finally:
                conn.close()
            return
        with psycopg.connect(self.url, autocommit=False) as pgconn, pgconn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    async def entries(self) -> list[AuditEntry]:
        async with open_store(self.url) as store:  # no audit key: it can only read
            out: list[AuditEntry] = []
            while page := await store.audit.list(after_seq=out[-1].seq if out else 0):
                out += page
            return out

    async def rechain_from(self, seq: int) -> None:
        """Recompute ``prev_hash``/``hash`` of every entry from ``seq`` on with the public,
        keyless chain function, as the old chain allowed anyone to."""
        entries = await self.entries()
        prev = next((e.hash for e in entries if e.seq == seq - 1), "")
        rows = []
        for entry in entries:
            if entry.seq < seq:
                continue
            forged = chain(entry, entry.seq, prev)
            rows.append((forged.prev_hash, forged.hash, entry.seq))
            prev = forged.hash
        self.executemany("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", rows)

    async def renumber(self) -> int:
        """Close the gaps in ``seq`` left by deleted rows; the first renumbered seq."""
        entries = await self.entries()
        first = 0
        for want, entry in enumerate(entries, start=1):
            if entry.seq != want:
                first = first or want
                self.execute("UPDATE audit SET seq = ? WHERE seq = ?", (want, entry.seq))
        return first


@asynccontextmanager
async def labd_process(
    data: Path, port: int, database_url: str | None = None, **env: str
) -> AsyncIterator[trio.Process]:
    """``python -m lab.labd.main`` as a real process (its SQLite file in ``data`` unless
    ``database_url`` names one; ``env`` adds LABD_* settings); yields once it listens, killed
    on exit."""
    extra = {"LABD_DATABASE_URL": database_url} if database_url else {}
    extra |= env
    env = labd_env(data, port, **extra)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "lab.labd.main"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with trio.open_nursery() as nursery:
            listening = trio.Event()

            async def drain() -> None:
                seen = b""
                assert proc.stderr is not None
                async for chunk in proc.stderr:  # keep reading: a full pipe would block labd
                    if not listening.is_set():
                        seen += chunk
                        if b"labd listening on" in seen:
                            listening.set()

            nursery.start_soon(drain)
            with trio.fail_after(60):
                await listening.wait()
            yield proc
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
