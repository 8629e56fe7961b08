"""Fixtures of the cluster tests: one throwaway PostgreSQL 15 per session, a database per test."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.rig import ClusterRig
from tests.store.pg_server import (
    PgServer,
    PgUnavailable,
    create_database,
    database_url,
    drop_database,
    running_postgres,
)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    try:
        with running_postgres() as server:
            yield server
    except PgUnavailable as exc:
        pytest.skip(f"cluster tests need PostgreSQL 15 binaries: {exc}")


@pytest.fixture
def cluster_db(pg: PgServer) -> Iterator[str]:
    name = f"c_{secrets.token_hex(6)}"
    create_database(pg.url(), name)
    try:
        yield database_url(pg.url(), name)
    finally:
        drop_database(pg.url(), name)


@pytest.fixture
def rig(tmp_path: Path, cluster_db: str) -> Iterator[ClusterRig]:
    # Notify sockets need a short path (AF_UNIX), so not under pytest's tmp_path.
    sockets = Path(tempfile.mkdtemp(prefix="lab-cluster-"))
    made = ClusterRig(tmp_path, sockets, cluster_db)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(sockets, ignore_errors=True)
