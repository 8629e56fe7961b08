"""The common top of every daemon's ``main``: run under trio, report config errors in one line."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from lab.errors import LabError

T = TypeVar("T")


def first_lab_error(exc: BaseException) -> LabError | None:
    """The first LabError inside ``exc`` (which may be a nested exception group)."""
    if isinstance(exc, LabError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_lab_error(inner)
            if found is not None:
                return found
    return None


def run_daemon(name: str, fn: Callable[[T], Awaitable[None]], arg: T) -> None:
    """``trio.run(fn, arg)``; a LabError (bare or in a group) exits 1 with ``name: message``."""
    try:
        trio.run(fn, arg)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BaseException as exc:
        err = first_lab_error(exc)
        if err is None:
            raise
        print(f"{name}: {err.message}", file=sys.stderr)
        raise SystemExit(1) from None
