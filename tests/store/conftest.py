"""The ``store`` fixture: every contract test runs once per backend.

A backend is a factory ``(tmp_path) -> database URL`` of an *empty* database. Only SQLite is
always available; the PostgreSQL/CockroachDB backend runs when ``LAB_TEST_POSTGRES_URL`` names
a server whose database the factory may wipe (the cluster-mode work fills that factory in).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from lab.store import Store, open_store


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/lab.db"


def _postgres(tmp_path: Path) -> str:
    url = os.environ.get("LAB_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PostgreSQL contract run needs LAB_TEST_POSTGRES_URL (an empty database)")
    return url


BACKENDS: dict[str, Callable[[Path], str]] = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url) as opened:
        yield opened
