"""The PostgreSQL / CockroachDB backend (cluster mode): a sync connection pool driven from
trio worker threads, SERIALIZABLE transactions retried whole on conflicts.

Daemons never import this package; they go through :func:`lab.store.open_store`.
"""

from lab.store.postgres.db import DatabaseStatistics, PgOptions
from lab.store.postgres.store import PostgresStore, open_postgres

__all__ = ["DatabaseStatistics", "PgOptions", "PostgresStore", "open_postgres"]
