"""Backend-neutral migration helpers: find the numbered SQL files and decide what to apply.

Migrations are files ``NNNN_name.sql`` under ``schema/<backend>/``. In the built wheel that folder
is shipped as ``lab/_data/schema/<backend>/``; in a source checkout it sits at the repository
root. Applying them is the backend's job (each in one transaction, recorded in
``schema_migrations``); this module only loads, orders and plans.
"""

from __future__ import annotations

import importlib.resources
import re
import sqlite3
from collections.abc import Iterator, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path

from attrs import frozen

from lab.errors import ConfigError, SchemaTooNew

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@frozen(kw_only=True)
class Migration:
    version: int
    name: str
    sql: str


def _schema_dir(backend: str) -> Traversable:
    packaged = importlib.resources.files("lab") / "_data" / "schema" / backend
    if packaged.is_dir():
        return packaged
    # Editable/dev checkout: src/lab/store/migrate.py -> parents[3] is the repository root.
    return Path(__file__).parents[3] / "schema" / backend


def schema_files(backend: str) -> list[Migration]:
    """Every migration of ``backend`` (``sqlite`` or ``postgres``), ordered by version.

    Raises ``ConfigError`` when the folder is missing or two files share a version: both mean a
    broken installation, not something a user can fix by retrying.
    """
    folder = _schema_dir(backend)
    if not folder.is_dir():
        raise ConfigError(f"no migrations found for backend {backend!r} (looked in {folder})")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise ConfigError(f"two migrations share version {version} in {folder}")
        found[version] = Migration(
            version=version, name=match.group(2), sql=entry.read_text(encoding="utf-8")
        )
    if not found:
        raise ConfigError(f"no migrations found for backend {backend!r} (looked in {folder})")
    return [found[v] for v in sorted(found)]


def pending(applied: set[int], migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations still to apply, in order.

    Raises ``SchemaTooNew`` when the database records a version newer than any we know: it was
    written by a newer labctl and we never downgrade or touch it.
    """
    known = max((m.version for m in migrations), default=0)
    newest = max(applied, default=0)
    if newest > known:
        raise SchemaTooNew(
            f"database schema version {newest} is newer than this labctl knows ({known})",
            details={
                "database_version": newest,
                "known_version": known,
                "hint": "upgrade labctl; the database was not modified",
            },
        )
    return [m for m in migrations if m.version not in applied]


def split_statements(sql: str) -> Iterator[str]:
    """Split a migration into single statements so they can run inside our own transaction.

    ``sqlite3.executescript`` would commit any open transaction first, which breaks "one
    migration, one transaction"; ``complete_statement`` knows about quotes, comments and
    ``BEGIN ... END`` blocks, so accumulating lines until it says "complete" is safe.
    """
    buffer: list[str] = []
    for line in sql.splitlines(keepends=True):
        buffer.append(line)
        text = "".join(buffer)
        if sqlite3.complete_statement(text):
            statement = text.strip()
            if statement.rstrip(";").strip():
                yield statement
            buffer = []
    rest = "".join(buffer).strip()
    if rest and not all(ln.strip().startswith("--") or not ln.strip() for ln in rest.splitlines()):
        raise ConfigError(f"migration ends with an incomplete statement: {rest[:60]!r}")
