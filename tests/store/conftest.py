"""The ``store`` fixture: every contract test runs once per backend.

A backend is a factory ``(tmp_path) -> database URL`` of an *empty* database. SQLite uses a file
in ``tmp_path``. PostgreSQL gets a fresh database per test (``CREATE DATABASE t_<random>``,
dropped afterwards) on one server per session: a throwaway PostgreSQL 15 started from
``/usr/lib/postgresql/15/bin`` (see ``pg_server.py``), or the server named by
``LAB_TEST_POSTGRES_URL`` (PostgreSQL or CockroachDB; its user needs CREATEDB). Without either,
the PostgreSQL runs are skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from audit_test_key import TEST_AUDIT_KEY
from pg_server import PgServer, PgUnavailable, create_database, database_url, drop_database
from pg_server import running_postgres as _running_postgres

from lab.store import Store, open_store


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/lab.db"


def _postgres(tmp_path: Path) -> str:
    raise AssertionError("the postgres URL comes from the postgres_url fixture")


BACKENDS: dict[str, Callable[[Path], str]] = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer | None]:
    """The session's throwaway PostgreSQL, or ``None`` when LAB_TEST_POSTGRES_URL is used."""
    if os.environ.get("LAB_TEST_POSTGRES_URL"):
        yield None
        return
    try:
        with _running_postgres() as server:
            yield server
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL tests need PostgreSQL 15 binaries: {exc}")


@pytest.fixture(scope="session")
def postgres_admin_url(postgres_server: PgServer | None) -> str:
    """A URL of the session's server whose user may create and drop databases."""
    if postgres_server is None:
        return os.environ["LAB_TEST_POSTGRES_URL"]
    return postgres_server.url()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    name = f"t_{secrets.token_hex(6)}"
    create_database(postgres_admin_url, name)
    try:
        yield database_url(postgres_admin_url, name)
    finally:
        drop_database(postgres_admin_url, name)


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        # Looked up lazily so a SQLite-only run never starts a server.
        return str(request.getfixturevalue("postgres_url"))
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url, audit_key=TEST_AUDIT_KEY) as opened:
        await opened.audit.start_chain()
        yield opened
