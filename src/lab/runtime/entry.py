"""The common top of every daemon's ``main``: run under trio, report start-up failures in one line.

Exit codes (documented in docs/operations.md; systemd's ``RestartPreventExitStatus`` can use
them):

==  ===========================================================================
0   stopped by SIGTERM/SIGINT, or ``--help``/``--version``
1   any other start-up failure: bad configuration, wrong CA passphrase, a newer schema
2   bad command line (unknown option or argument)
3   the listening port is already in use
4   the data directory cannot be created or written
5   the database is unreachable
6   an optional dependency is missing (``pip install 'labctl[postgres]'``)
==  ===========================================================================
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import trio

from lab.errors import (
    AddressInUse,
    DatabaseUnreachable,
    DataDirUnusable,
    LabError,
    MissingDependency,
)
from lab.runtime.commandline import report

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ADDRESS_IN_USE = 3
EXIT_DATA_DIR = 4
EXIT_DATABASE = 5
EXIT_MISSING_DEPENDENCY = 6

_EXIT_BY_ERROR: tuple[tuple[type[LabError], int], ...] = (
    (AddressInUse, EXIT_ADDRESS_IN_USE),
    (DataDirUnusable, EXIT_DATA_DIR),
    (DatabaseUnreachable, EXIT_DATABASE),
    (MissingDependency, EXIT_MISSING_DEPENDENCY),
)


def _first(exc: BaseException, match: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception in ``exc`` (which may be a nested exception group) that matches."""
    if match(exc):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, match)
            if found is not None:
                return found
    return None


def first_lab_error(exc: BaseException) -> LabError | None:
    """The first LabError inside ``exc`` (which may be a nested exception group)."""
    found = _first(exc, lambda e: isinstance(e, LabError))
    return found if isinstance(found, LabError) else None


def _first_address_in_use(exc: BaseException) -> BaseException | None:
    return _first(exc, lambda e: isinstance(e, OSError) and e.errno == errno.EADDRINUSE)


def exit_code(err: LabError) -> int:
    for cls, code in _EXIT_BY_ERROR:
        if isinstance(err, cls):
            return code
    return EXIT_FAILURE


def run_daemon(name: str, fn: Callable[[T], Awaitable[None]], arg: T) -> None:
    """``trio.run(fn, arg)``; a LabError (bare or in a group) exits in one line with its code.

    The line is ``NAME: error: message`` followed by ``NAME: hint: ...`` when the error has
    a hint; the exit code is from the table in this module's docstring.
    """
    with startup_errors(name):
        trio.run(fn, arg)


@contextmanager
def startup_errors(name: str) -> Iterator[None]:
    """Report a LabError (bare or in a group) raised in the block as ``NAME: error: ...``
    (and a hint line) and exit with its code; Ctrl-C exits 130; anything else propagates."""
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        err = first_lab_error(exc)
        if err is None:
            bind = _first_address_in_use(exc)
            if bind is None:
                raise
            err = AddressInUse(f"address already in use: {bind}")
        hint = err.details.get("hint")
        report(err.message, str(hint) if hint else None, program=name)
        raise SystemExit(exit_code(err)) from None
