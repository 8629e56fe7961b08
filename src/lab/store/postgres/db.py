"""The connection pool, the thread hop and the transaction discipline of the PostgreSQL backend.

psycopg's async API does not run under trio, so every call takes a connection from a sync
``psycopg_pool.ConnectionPool`` in a worker thread, behind a ``trio.CapacityLimiter`` as wide as
the pool. Each call is one transaction at SERIALIZABLE (CockroachDB's only real level; on
PostgreSQL it makes replicas safe without explicit locks). A serialization failure (SQLSTATE
40001, which may surface at COMMIT) retries the *whole* transaction function with jittered
exponential backoff; after ``max_attempts`` the caller gets ``Unavailable``.

Every connection carries ``statement_timeout`` and ``idle_in_transaction_session_timeout``:
a worker thread cannot be interrupted, so the server must bound how long one can run.

Every call has a deadline, ``call_timeout``: waiting for a limiter slot, for a pool connection,
the transaction and its retries all fit in it, or the caller gets ``Unavailable``. The deadline
lives here, around the thread hop; the thread's pool wait is bounded by what remains of it, and
a query still running when it expires is cancelled server-side like any cancelled call.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
import trio
from attrs import define, frozen
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from lab.errors import ConfigError, Conflict, Invalid, LabError, Unavailable
from lab.model import AuditEntry
from lab.store.audited import PendingAudit, pending_audit
from lab.store.rows import Params, RowCodec
from lab.store.sql.dialect import Dialect, DriverRunner

P = ParamSpec("P")
R = TypeVar("R")
Conn: TypeAlias = psycopg.Connection[TupleRow]

log = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 5.0
"""After a cancelled call, how long the trio side waits for its thread (shielded)."""


@frozen(kw_only=True)
class PgOptions:
    pool_size: int = 10
    """Connections per labd replica; also the width of the thread limiter."""
    statement_timeout: float = 30.0
    """Server-side bound on one statement (``statement_timeout``), seconds."""
    idle_in_transaction_timeout: float = 60.0
    """Server-side bound on a transaction left open (``idle_in_transaction_session_timeout``)."""
    pool_timeout: float = 10.0
    """How long a call waits for a pool connection (e.g. while the server is down), at most;
    ``call_timeout`` usually cuts the wait shorter."""
    call_timeout: float = 5.0
    """Deadline of one whole call (limiter, pool, transaction, retries), seconds; past it the
    caller gets ``Unavailable``. Migrations get ``statement_timeout`` instead when longer."""
    connect_timeout: float = 5.0
    """libpq ``connect_timeout`` of each new connection, seconds."""
    max_attempts: int = 10
    """Attempts of one transaction on serialization failures before ``Unavailable``."""
    backoff_base: float = 0.005
    backoff_cap: float = 0.5

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))


class RetryTransaction(Exception):
    """Raised inside a transaction function: roll back and run the whole function again."""


class _Disconnected(Exception):
    """No usable connection (server down, restarting, connection lost)."""


@frozen(kw_only=True)
class DatabaseStatistics:
    transactions: int
    """Transactions committed."""
    conflicts: int
    """Serialization failures (40001) that led to a retry or to ``Unavailable``."""
    reconnects: int
    """Idempotent reads run again after a lost connection."""
    cancellations: int
    """Calls cancelled from trio while their query ran (server-side cancel requested)."""
    deadlines: int
    """Calls that ran out of ``call_timeout`` and failed with ``Unavailable``."""


@define
class _Counters:
    transactions: int = 0
    conflicts: int = 0
    reconnects: int = 0
    cancellations: int = 0
    deadlines: int = 0


def conninfo_from_url(url: str) -> str:
    """A libpq URI from our URL: ``cockroachdb://`` is spelled ``postgresql://`` for libpq."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "cockroachdb"):
        raise ConfigError(f"not a PostgreSQL/CockroachDB URL: {url!r}")
    return urlunsplit(parts._replace(scheme="postgresql"))


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PgCodec(RowCodec):
    """Times and JSONB pass through: psycopg converts ``datetime`` and reads JSONB itself."""

    def time(self, value: datetime) -> datetime:
        return value

    def parse_time(self, value: Any) -> datetime:
        return cast(datetime, value)

    def json(self, value: Any) -> Jsonb:
        return Jsonb(value)

    def parse_json(self, value: Any) -> Any:
        return value

    def audit_params(self, e: AuditEntry) -> Params:
        # PostgreSQL text cannot hold NUL: refused here (ValueError, the entry's own failure)
        # rather than by the INSERT, which would abort the whole batch's transaction.
        if any("\x00" in v for v in (e.user, e.session, e.action, e.resource, e.result, e.source)):
            raise ValueError("text may not contain NUL characters")
        return super().audit_params(e)


CODEC = PgCodec()


def _labels_match(labels: Mapping[str, str]) -> tuple[str, tuple[Any, ...]]:
    # JSONB containment: every selector pair present with that exact value; the key is data,
    # not a path, so no quoting rules apply to odd keys.
    return "labels @> ?", (Jsonb(dict(labels)),)


POSTGRES = Dialect(
    name="postgres",
    codec=CODEC,
    placeholder="%s",
    unique_violation=(psycopg.errors.UniqueViolation,),
    foreign_key_violation=(psycopg.errors.ForeignKeyViolation,),
    labels_match=_labels_match,
)


def _configure(settings: PgOptions) -> Callable[[Conn], None]:
    def configure(conn: Conn) -> None:
        # SET takes no bind parameters; the values are our own numbers, quoted as literals.
        for name, value in (
            ("statement_timeout", int(settings.statement_timeout * 1000)),
            (
                "idle_in_transaction_session_timeout",
                int(settings.idle_in_transaction_timeout * 1000),
            ),
            ("timezone", "UTC"),
        ):
            conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE

    return configure


def _is_disconnect(exc: psycopg.OperationalError) -> bool:
    # No SQLSTATE: libpq lost or could not open the connection. 08xxx: connection exception;
    # 57P01-57P03: admin/crash shutdown, cannot connect now (starting up).
    state = exc.sqlstate
    return state is None or state.startswith(("08", "57P"))


def _bind(
    fn: Callable[Concatenate[Conn, P], R], *args: P.args, **kwargs: P.kwargs
) -> Callable[[Conn], R]:
    def call(conn: Conn) -> R:
        return fn(conn, *args, **kwargs)

    return call


class _InFlight:
    """One call's connection, shared with the trio side so it can cancel the running query."""

    def __init__(self, token: trio.lowlevel.TrioToken, *, pool_wait: float) -> None:
        self._token = token
        self.pool_wait = pool_wait
        """How long the thread may wait for a pool connection: what the deadline leaves."""
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self.finished = trio.Event()

    def run(self, work: Callable[[_InFlight], R]) -> R:
        try:
            return work(self)
        finally:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self.finished.set)

    @contextmanager
    def using(self, conn: Conn) -> Iterator[None]:
        with self._lock:
            self._conn = conn
        try:
            yield
        finally:
            # Blocks while a cancel request is being sent, so the connection cannot go back to
            # the pool (and to another caller's query) until that request is done.
            with self._lock:
                self._conn = None

    def cancel_server_side(self, timeout: float) -> bool:
        """Ask the server to cancel this call's running query; True when one was in use."""
        with self._lock:
            if self._conn is None:
                return False
            try:
                self._conn.cancel_safe(timeout=timeout)
            except psycopg.Error as exc:
                log.warning("could not cancel a query server-side: %s", exc)
            return True


class Database:
    """Owns the pool and the limiter; :meth:`run` and :meth:`read` are the only ways in."""

    def __init__(self, url: str, pool: ConnectionPool[Conn], settings: PgOptions) -> None:
        self.url = url
        self.pool = pool
        self.settings = settings
        self.limiter = trio.CapacityLimiter(settings.pool_size)
        self._counters = _Counters()
        self.audit_append: Callable[[Conn, AuditEntry], AuditEntry] | None = None
        """Chains an entry into the open transaction (set by the store when it has a key):
        a write run for an audited request commits with its entry (lab.store.audited)."""

    async def run(
        self, fn: Callable[Concatenate[Conn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(conn, *args, **kwargs)`` as one SERIALIZABLE transaction in a worker thread.

        ``fn`` may run several times (serialization failures retry it whole), so it must not
        have side effects outside the transaction beyond recomputing its own results.

        Raises what ``fn`` raises as a ``LabError``; ``Conflict`` for an integrity error ``fn``
        did not handle; ``Invalid`` for data PostgreSQL refuses (a NUL in text);
        ``Unavailable`` when the server cannot be reached, a statement times out, conflicts
        persist or the call does not finish within ``call_timeout``. On cancellation (and at
        the deadline) the running query is cancelled server-side and the call waits (shielded,
        up to ``CANCEL_GRACE_SECONDS``) for its thread; the transaction may or may not have
        committed.
        """
        return await self._run(
            _bind(fn, *args, **kwargs), idempotent=False, seconds=self.settings.call_timeout
        )

    async def run_schema_change(
        self, fn: Callable[Concatenate[Conn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Like :meth:`run` with a deadline of ``statement_timeout`` when that is longer: a
        migration's DDL may take CockroachDB longer than a request may wait, and it runs at
        start, before anyone waits on it."""
        seconds = max(self.settings.call_timeout, self.settings.statement_timeout)
        return await self._run(_bind(fn, *args, **kwargs), idempotent=False, seconds=seconds)

    async def read(
        self, fn: Callable[Concatenate[Conn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Like :meth:`run` for a read-only ``fn``: a lost connection is retried once (within
        the same deadline)."""
        return await self._run(
            _bind(fn, *args, **kwargs), idempotent=True, seconds=self.settings.call_timeout
        )

    def statistics(self) -> DatabaseStatistics:
        c = self._counters
        return DatabaseStatistics(
            transactions=c.transactions,
            conflicts=c.conflicts,
            reconnects=c.reconnects,
            cancellations=c.cancellations,
            deadlines=c.deadlines,
        )

    def close(self) -> None:
        """Close the pool (blocking: joins its worker threads)."""
        self.pool.close(timeout=CANCEL_GRACE_SECONDS)

    async def _run(self, fn: Callable[[Conn], R], *, idempotent: bool, seconds: float) -> R:
        try:
            with trio.fail_after(seconds):
                return await self._attempts(fn, idempotent=idempotent)
        except trio.TooSlowError as exc:
            self._counters.deadlines += 1
            raise Unavailable(
                f"database {redact(self.url)} did not answer within {seconds:g} s",
                details={
                    "timeout": seconds,
                    "hint": "check that the database server is running and reachable",
                },
            ) from exc

    async def _attempts(self, fn: Callable[[Conn], R], *, idempotent: bool) -> R:
        attempt = 0
        reconnected = False
        while True:
            attempt += 1
            try:
                pending = None if idempotent else pending_audit()
                result = await self._hop(functools.partial(self._attempt, fn, pending))
            except RetryTransaction as exc:
                self._counters.conflicts += 1
                if attempt >= self.settings.max_attempts:
                    raise Unavailable(
                        f"database transaction still conflicting after {attempt} attempts",
                        details={"attempts": attempt, "hint": "retry later"},
                    ) from exc.__cause__
                await trio.sleep(self.settings.backoff(attempt))
                continue
            except _Disconnected as exc:
                if idempotent and not reconnected:
                    # The pool discards the broken connection; one fresh try for a read.
                    reconnected = True
                    self._counters.reconnects += 1
                    continue
                raise Unavailable(
                    f"database {redact(self.url)} unavailable: {exc}",
                    details={"hint": "check that the database server is running and reachable"},
                ) from exc.__cause__
            self._counters.transactions += 1
            return result

    async def _hop(self, work: Callable[[_InFlight], R]) -> R:
        async with self.limiter:
            # The thread cannot see trio's deadline: hand it what is left for the pool wait, so
            # it is back about when the deadline cancels us (a down server is the usual case).
            left = trio.current_effective_deadline() - trio.current_time()
            inflight = _InFlight(
                trio.lowlevel.current_trio_token(),
                pool_wait=max(0.0, min(self.settings.pool_timeout, left)),
            )
            try:
                # abandon_on_cancel so that cancellation reaches us while the thread still runs;
                # the thread is not left behind: we wait for it below.
                return await trio.to_thread.run_sync(inflight.run, work, abandon_on_cancel=True)
            except trio.Cancelled:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CANCEL_GRACE_SECONDS
                    if await trio.to_thread.run_sync(
                        inflight.cancel_server_side, CANCEL_GRACE_SECONDS
                    ):
                        self._counters.cancellations += 1
                    await inflight.finished.wait()
                raise

    def _attempt(
        self, fn: Callable[[Conn], R], pending: PendingAudit | None, inflight: _InFlight
    ) -> R:
        """One try in the worker thread; maps driver errors at the seam. A pending audit entry
        is chained into the transaction after ``fn`` (again on every retry), and marked stored
        only once the COMMIT went through."""
        try:
            stored: AuditEntry | None = None
            with (
                self.pool.connection(timeout=inflight.pool_wait) as conn,
                inflight.using(conn),
                conn.transaction(),
            ):
                result = fn(conn)
                if pending is not None and self.audit_append is not None:
                    append = self.audit_append
                    chained = [append(conn, entry) for entry in pending.entries()]
                    stored = chained[0]
            if pending is not None and stored is not None:
                pending.stored = stored
            return result
        except (LabError, RetryTransaction):
            raise
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise RetryTransaction(str(exc)) from exc
        except PoolTimeout as exc:
            raise _Disconnected(f"no connection within {inflight.pool_wait:.3g} s ({exc})") from exc
        except PoolClosed as exc:
            raise Unavailable("the store is closed") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise Unavailable(
                "database statement cancelled (cancelled call or statement_timeout)",
                details={"statement_timeout": self.settings.statement_timeout},
            ) from exc
        except psycopg.IntegrityError as exc:
            raise Conflict(f"the change conflicts with stored data: {exc}") from exc
        except psycopg.DataError as exc:
            raise Invalid(f"the database refused this value: {exc}") from exc
        except psycopg.OperationalError as exc:
            if _is_disconnect(exc):
                raise _Disconnected(str(exc).strip()) from exc
            raise Unavailable(f"database {redact(self.url)} failed: {exc}") from exc
        except psycopg.Error as exc:
            raise Unavailable(f"database {redact(self.url)} failed: {exc}") from exc


def open_pool(url: str, settings: PgOptions) -> Database:
    """Create the pool and wait for its first connection (blocking; run it in a thread).

    Raises ``Unavailable`` when no connection can be made within ``connect_timeout``.
    """
    if settings.pool_size < 1:
        raise ConfigError("pool_size must be at least 1")
    if settings.call_timeout <= 0:
        raise ConfigError("call_timeout must be positive")
    pool: ConnectionPool[Conn] = ConnectionPool(
        conninfo_from_url(url),
        kwargs={"autocommit": True, "connect_timeout": max(1, round(settings.connect_timeout))},
        min_size=1,
        max_size=settings.pool_size,
        open=False,
        configure=_configure(settings),
        # One round trip per checkout buys a clean failover: connections a restart killed are
        # dropped here instead of failing a caller's transaction.
        check=ConnectionPool.check_connection,
        timeout=settings.pool_timeout,
        name="labctl",
    )
    try:
        pool.open(wait=True, timeout=settings.connect_timeout)
    except PoolTimeout as exc:
        pool.close(timeout=CANCEL_GRACE_SECONDS)
        raise Unavailable(
            f"cannot connect to the database {redact(url)}: {_why_not(url, settings)}",
            details={"hint": "check that the database server is running and reachable"},
        ) from exc
    except BaseException:
        pool.close(timeout=CANCEL_GRACE_SECONDS)
        raise
    return Database(url, pool, settings)


def _why_not(url: str, settings: PgOptions) -> str:
    """The pool only logs why it could not connect; one direct attempt recovers the reason."""
    try:
        psycopg.connect(
            conninfo_from_url(url), connect_timeout=max(1, round(settings.connect_timeout))
        ).close()
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    return f"no connection within {settings.connect_timeout:g} s"


def pg_runner(db: Database) -> DriverRunner:
    """The shared repositories' way in (lab.store.sql): writes through :meth:`Database.run`,
    reads through :meth:`Database.read` (a lost connection is retried once)."""
    return DriverRunner(POSTGRES, read=db.read, write=db.run)
