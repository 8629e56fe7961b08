"""The ``database_url`` fixture: the API tests of apply run on SQLite and on PostgreSQL (one
throwaway PostgreSQL 15 per session, a fresh database per test), as labd's transaction must be
all or nothing on both."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.store.pg_server import (
    PgServer,
    PgUnavailable,
    create_database,
    database_url,
    drop_database,
    running_postgres,
)


@pytest.fixture(scope="session")
def apply_pg() -> Iterator[PgServer]:
    try:
        with running_postgres() as server:
            yield server
    except PgUnavailable as exc:
        pytest.skip(f"the PostgreSQL runs need PostgreSQL 15 binaries: {exc}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def labd_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A labd ``database_url``: empty for SQLite (labd's default file), else a new database."""
    if request.param == "sqlite":
        yield ""
        return
    server: PgServer = request.getfixturevalue("apply_pg")
    name = f"a_{secrets.token_hex(6)}"
    create_database(server.url(), name)
    try:
        yield database_url(server.url(), name)
    finally:
        drop_database(server.url(), name)
