"""Open a Store by URL: ``sqlite:///path/file.db`` or ``postgresql://...``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from lab.errors import ConfigError
from lab.store.base import Store


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    """Open, migrate and seed the database at ``url``; close it on exit.

    Raises ``ConfigError`` for an unknown scheme, ``SchemaTooNew`` when the database was written
    by a newer labctl, ``Unavailable`` when it cannot be opened.
    """
    if url.startswith("sqlite:///"):
        from lab.store.sqlite import open_sqlite

        async with open_sqlite(url) as store:
            yield store
    elif url.startswith(("postgresql://", "postgres://", "cockroachdb://")):
        from lab.store.postgres import open_postgres

        async with open_postgres(url) as store:
            yield store
    else:
        raise ConfigError(
            f"unsupported database URL {url!r}",
            details={"hint": "use sqlite:///path/to/labd.db or postgresql://user@host/db"},
        )
