"""labd's data: its data dir (created 0700, checked writable) and its database, opened the
way both ``labd`` and ``labd secrets rotate`` need it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from lab.errors import DatabaseUnreachable, Unavailable
from lab.labd.config import LabdConfig
from lab.runtime.datadir import prepare_data_dir as prepare
from lab.store import AuditKey, Store, open_store

log = logging.getLogger("labd")


def prepare_data_dir(path: Path) -> None:
    """Create the data dir (0700) and check it is writable; raise DataDirUnusable in one line."""
    prepare(path, setting="LABD_DATA_DIR (or data_dir in labd.yaml)")
    warn_if_readable(path)


@asynccontextmanager
async def open_database(config: LabdConfig, audit_key: AuditKey) -> AsyncIterator[Store]:
    """:func:`lab.store.open_store` for labd; a database that cannot be reached while opening
    is :class:`DatabaseUnreachable` (its own exit code), later failures pass unchanged.
    """
    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(
                open_store(
                    config.effective_database_url,
                    timeout=config.database_timeout,
                    audit_key=audit_key,
                )
            )
        except Unavailable as exc:
            if isinstance(exc, DatabaseUnreachable):
                raise
            raise DatabaseUnreachable(
                exc.message,
                details={
                    **exc.details,
                    "hint": "check database_url (LABD_DATABASE_URL) and that the database runs",
                },
            ) from exc
        yield store


def warn_if_readable(path: Path) -> bool:
    """Log a warning when the data dir is group- or world-readable (it holds the CA key, the
    database and the bootstrap token); returns whether it warned. labd does not change the
    mode of a directory it did not create: the operator may share it on purpose."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077 == 0:
        return False
    log.warning(
        "data dir %s has mode %04o: other users may read or list it; run: chmod 700 %s",
        path,
        mode,
        path,
    )
    return True
