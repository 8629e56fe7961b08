"""What differs between the SQL backends, as data: the :class:`Dialect`; and how the shared
repositories run statements: :class:`Tx` over one open transaction, :class:`Runner` to get one.

Statements are written once with ``?`` placeholders; :meth:`Dialect.q` spells them for the
driver (``%s`` for psycopg). No statement of the store has a literal ``?`` or ``%``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from attrs import field, frozen

from lab.store.rows import RowCodec

P = ParamSpec("P")
R = TypeVar("R")

LabelMatch = Callable[[Mapping[str, str]], tuple[str, tuple[Any, ...]]]
"""A label selector (key = value pairs, all required) as one SQL predicate on the ``labels``
column, with ``?`` placeholders, and its parameters."""


@frozen(kw_only=True)
class Dialect:
    name: str
    codec: RowCodec
    """Times and JSON as the driver stores them."""
    placeholder: str
    unique_violation: tuple[type[Exception], ...]
    """Driver errors of a duplicate key (the repository raises ``Conflict``)."""
    foreign_key_violation: tuple[type[Exception], ...]
    """Driver errors of a missing referenced row (the repository raises ``NotFound``)."""
    labels_match: LabelMatch
    _spelled: dict[str, str] = field(factory=dict, init=False, eq=False, repr=False)

    def q(self, sql: str) -> str:
        """``sql`` with its ``?`` placeholders spelled for the driver (cached per statement)."""
        if self.placeholder == "?":
            return sql
        spelled = self._spelled.get(sql)
        if spelled is None:
            spelled = self._spelled[sql] = sql.replace("?", self.placeholder)
        return spelled


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Sequence[Any]: ...
    def executemany(self, sql: Any, params: Any, /) -> Any: ...


class _Conn(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...
    def cursor(self) -> Any: ...


class Tx:
    """Statements inside one open transaction (the runner opened it and will commit it)."""

    __slots__ = ("conn", "dialect")

    def __init__(self, conn: _Conn, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    def _execute(self, sql: str, params: Sequence[Any]) -> _Cursor:
        cur: _Cursor = self.conn.execute(self.dialect.q(sql), params)
        return cur

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row, or None."""
        return self._execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any]:
        return self._execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a change; the number of rows it touched."""
        return self._execute(sql, params).rowcount

    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        rows = list(params)
        if rows:
            cur: _Cursor = self.conn.cursor()
            cur.executemany(self.dialect.q(sql), rows)


class Runner(Protocol):
    """A backend's way in: each call runs ``fn`` with a :class:`Tx` in a worker thread.

    ``write`` runs it as one write transaction that commits together with the request's pending
    audit entry (:mod:`lab.store.audited`); it may run ``fn`` more than once (PostgreSQL retries
    a serialization failure whole), so ``fn`` has no effect outside the transaction. ``read``
    runs a read-only ``fn``. Driver errors that ``fn`` does not handle are mapped by the
    backend (``Conflict``, ``Invalid``, ``Unavailable``).
    """

    @property
    def dialect(self) -> Dialect: ...

    async def read(
        self, fn: Callable[Concatenate[Tx, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    async def write(
        self, fn: Callable[Concatenate[Tx, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R: ...


class RunsOp(Protocol):
    """How a backend runs ``op(conn)`` on a driver connection in its worker thread."""

    def __call__(self, op: Callable[[Any], R], /) -> Awaitable[R]: ...


class DriverRunner:
    """The :class:`Runner` of a backend: ``fn`` gets a :class:`Tx` in the backend's dialect
    and runs through the backend's ``read`` or ``write`` (which opens the transaction)."""

    def __init__(self, dialect: Dialect, *, read: RunsOp, write: RunsOp) -> None:
        self._dialect = dialect
        self._read = read
        self._write = write

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def read(
        self, fn: Callable[Concatenate[Tx, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return await self._read(self._in_tx(fn, *args, **kwargs))

    async def write(
        self, fn: Callable[Concatenate[Tx, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return await self._write(self._in_tx(fn, *args, **kwargs))

    def _in_tx(
        self, fn: Callable[Concatenate[Tx, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> Callable[[Any], R]:
        dialect = self._dialect

        def op(conn: Any) -> R:
            return fn(Tx(conn, dialect), *args, **kwargs)

        return op
