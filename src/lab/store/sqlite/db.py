"""The one SQLite connection: opening, pragmas, migrations, seed and the thread hop.

Every call runs in a worker thread via ``trio.to_thread.run_sync`` behind a
``CapacityLimiter(1)``: sqlite3 blocks, and one connection must never be used by two threads at
once. The connection runs in autocommit mode (``isolation_level=None``) so transactions are
explicit (:func:`transaction`), never opened behind our back by the driver.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from lab.errors import ConfigError, Conflict, LabError, Unavailable
from lab.model import AuditEntry
from lab.store.audited import pending_audit
from lab.store.migrate import Migration, pending, schema_files, split_statements
from lab.store.rows import RowCodec, dumps, loads
from lab.store.sql.dialect import Dialect, DriverRunner

P = ParamSpec("P")
R = TypeVar("R")

BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for another process's write lock before failing (``Unavailable``).

A worker thread cannot be cancelled, so this bounds how long a cancelled call can linger.
"""


def ts(value: datetime) -> str:
    """Store a time as fixed-width UTC ISO-8601 so text comparison is time comparison."""
    if value.tzinfo is None:
        raise ValueError("times must carry a timezone")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class SqliteCodec(RowCodec):
    """Times as :func:`ts` text, JSON as canonical text."""

    def time(self, value: datetime) -> str:
        return ts(value)

    def parse_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def json(self, value: Any) -> str:
        return dumps(value)

    def parse_json(self, value: Any) -> Any:
        return loads(value)


CODEC = SqliteCodec()

_LABEL_PAIR = "EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ? AND value = ?)"


def _labels_match(labels: Mapping[str, str]) -> tuple[str, tuple[Any, ...]]:
    # json_each, not a JSON path: a path would need quoting rules for the key.
    pairs = sorted(labels.items())
    return " AND ".join([_LABEL_PAIR] * len(pairs)), tuple(v for pair in pairs for v in pair)


SQLITE = Dialect(
    name="sqlite",
    codec=CODEC,
    placeholder="?",
    # SQLite names no constraint kind in its exception: both are IntegrityError.
    unique_violation=(sqlite3.IntegrityError,),
    foreign_key_violation=(sqlite3.IntegrityError,),
    labels_match=_labels_match,
)


class LabConnection(sqlite3.Connection):
    """The store's connection: it knows how to chain an audit entry into the open transaction
    (set by the store; None for a connection that cannot append, e.g. while migrating)."""

    audit_append: Callable[[sqlite3.Connection, AuditEntry], AuditEntry] | None = None
    audit_rolled_back: Callable[[], None] | None = None


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; IMMEDIATE takes the write lock up front so a busy database fails
    at BEGIN (after ``busy_timeout``) instead of deadlocking half-way through.

    When the calling context carries a pending audit entry (:mod:`lab.store.audited`), it is
    chained and inserted before COMMIT: the change and its entry commit together or not at all.
    """
    conn.execute("BEGIN IMMEDIATE")
    pending = pending_audit()
    append = getattr(conn, "audit_append", None)
    stored: AuditEntry | None = None
    try:
        yield conn
        if pending is not None and append is not None:
            chained = [append(conn, entry) for entry in pending.entries()]
            stored = chained[0]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        reset = getattr(conn, "audit_rolled_back", None)
        if stored is not None and reset is not None:
            reset()
        raise
    if pending is not None and stored is not None:
        pending.stored = stored


class Database:
    """Owns the connection and the limiter; :meth:`run` is the only way in."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.limiter = trio.CapacityLimiter(1)

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``fn(conn, *args, **kwargs)`` in a worker thread under the limiter.

        Maps driver errors at the seam: an integrity error that ``fn`` did not handle becomes
        ``Conflict``, any other sqlite3 error ``Unavailable``. On cancellation the call still
        runs to completion in its thread (the outcome is unknown to the caller).
        """
        call = functools.partial(self._call, fn, *args, **kwargs)
        return await trio.to_thread.run_sync(call, limiter=self.limiter)

    def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        try:
            return fn(self.conn, *args, **kwargs)
        except LabError:
            raise
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the change conflicts with stored data: {exc}") from exc
        except sqlite3.Error as exc:
            raise Unavailable(f"database {self.path} failed: {exc}") from exc

    def close(self) -> None:
        self.conn.close()


def _applied_versions(conn: sqlite3.Connection) -> set[int]:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if row is None:
        return set()
    return {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    with transaction(conn):
        # Another process may have applied it since we looked; the write lock makes this exact.
        done = conn.execute(
            "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
        ).fetchone()
        if done:
            return
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, ts(datetime.now(UTC))),
        )


def migrate(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied.

    Raises ``SchemaTooNew`` (before writing anything) for a database from a newer labctl.
    """
    known = schema_files("sqlite") if migrations is None else migrations
    todo = pending(_applied_versions(conn), known)
    if not todo:
        return []
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    for migration in todo:
        _apply(conn, migration)
    return [m.version for m in todo]


DB_FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_files(path: Path) -> None:
    """Make the database file (created empty if missing) and its WAL/shared-memory/journal
    files readable by the owner only. The database holds token hashes, the audit log and
    identities; SQLite creates its side files with the database file's mode, so a 0600
    database keeps them 0600 too. Existing files from an older labctl are tightened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, DB_FILE_MODE)
    try:
        os.fchmod(fd, DB_FILE_MODE)
    finally:
        os.close(fd)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.chmod(DB_FILE_MODE)


def connect(path: Path, *, busy_timeout: float = BUSY_TIMEOUT_MS / 1000) -> sqlite3.Connection:
    """Open ``path`` (creating its directory), check the schema is not too new, set pragmas.

    Raises ``Unavailable`` naming the path when the directory or file cannot be created or
    written, ``SchemaTooNew`` when a newer labctl wrote the database (left untouched).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Unavailable(
            f"cannot create the database directory {path.parent}: {exc.strerror or exc}",
            details={"path": str(path)},
        ) from exc
    try:
        private_files(path)
    except OSError as exc:
        raise Unavailable(
            f"cannot create the database {path}: {exc.strerror or exc}",
            details={"path": str(path)},
        ) from exc
    try:
        conn = sqlite3.connect(
            path,
            check_same_thread=False,
            isolation_level=None,
            timeout=busy_timeout,
            factory=LabConnection,
        )
    except sqlite3.Error as exc:
        raise Unavailable(
            f"cannot open the database {path}: {exc}", details={"path": str(path)}
        ) from exc
    try:
        # PRAGMA takes no bind parameters; the value is our own number.
        conn.execute(f"PRAGMA busy_timeout = {max(0, round(busy_timeout * 1000))}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Refuse a too-new schema before any pragma that rewrites the file (journal_mode does).
        pending(_applied_versions(conn), schema_files("sqlite"))
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise Unavailable(f"database {path} cannot use WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
    except LabError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise Unavailable(
            f"cannot use the database {path}: {exc}", details={"path": str(path)}
        ) from exc
    return conn


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` is relative to the working directory, ``sqlite:////abs.db``
    (four slashes) absolute, as in SQLAlchemy; ``sqlite:///~/x.db`` is under the home folder."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(
            f"not a SQLite URL: {url!r}", details={"hint": "use sqlite:///path/to/labd.db"}
        )
    return Path(url[len(prefix) :]).expanduser()


def sqlite_runner(db: Database) -> DriverRunner:
    """The shared repositories' way in (lab.store.sql): every call under the one connection's
    limiter; a write is one ``BEGIN IMMEDIATE`` :func:`transaction`."""

    async def write(op: Callable[[sqlite3.Connection], R]) -> R:
        def in_transaction(conn: sqlite3.Connection) -> R:
            with transaction(conn):
                return op(conn)

        return await db.run(in_transaction)

    return DriverRunner(SQLITE, read=db.run, write=write)
