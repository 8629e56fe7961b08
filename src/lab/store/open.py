"""Open a Store by URL: ``sqlite:///path/file.db`` or ``postgresql://...``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from lab.errors import ConfigError, MissingDependency
from lab.store.auditchain import AuditKey
from lab.store.base import Store

DEFAULT_TIMEOUT = 5.0
"""Seconds one database call may take by default (labd's ``database_timeout``)."""


@asynccontextmanager
async def open_store(
    url: str,
    *,
    # Not a deadline of opening (ASYNC109's concern) but a setting of every later call.
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    audit_key: AuditKey | None = None,
) -> AsyncIterator[Store]:
    """Open, migrate and seed the database at ``url``; close it on exit.

    ``timeout`` bounds one database call, in seconds: PostgreSQL's per-call deadline
    (``PgOptions.call_timeout``), SQLite's ``busy_timeout``. Past it the call fails with
    ``Unavailable``. ``audit_key`` MACs the audit chain; a store opened without one can read
    everything but cannot append audit entries (``Unavailable``).

    Raises ``ConfigError`` for an unknown scheme, ``MissingDependency`` for a PostgreSQL URL
    without psycopg installed (the ``postgres`` extra), ``SchemaTooNew`` when the database was
    written by a newer labctl, ``Unavailable`` when it cannot be opened. The audit key is
    checked against the database by ``store.audit.start_chain()``, not here.
    """
    if url.startswith("sqlite:///"):
        from lab.store.sqlite import open_sqlite

        async with open_sqlite(url, busy_timeout=timeout, audit_key=audit_key) as store:
            yield store
    elif url.startswith(("postgresql://", "postgres://", "cockroachdb://")):
        try:
            from lab.store.postgres import PgOptions, open_postgres
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise MissingDependency(
                f"{url.partition(':')[0]}:// databases need psycopg, which is not installed",
                details={"hint": "pip install 'labctl[postgres]'"},
            ) from None
        async with open_postgres(
            url, options=PgOptions(call_timeout=timeout), audit_key=audit_key
        ) as store:
            yield store
    else:
        raise ConfigError(
            f"unsupported database URL {url!r}",
            details={"hint": "use sqlite:///path/to/labd.db or postgresql://user@host/db"},
        )
