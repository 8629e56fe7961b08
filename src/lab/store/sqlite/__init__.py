"""The SQLite backend (default, single-node): one connection, WAL, group-commit hot writes.

Daemons never import this package; they go through :func:`lab.store.open_store`.
"""

from lab.store.sqlite.store import SqliteStore, open_sqlite

__all__ = ["SqliteStore", "open_sqlite"]
