"""What a route answers on success: 200, or 201 for the routes marked :func:`created`.

The audit entry of a request commits with its first change, before the handler answers (see
lab.labd.audit.entries), so the status it records is read from the route, not from the
response; the mark is also what makes the route answer 201, so the two cannot disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

CREATED = 201
_ATTR = "__lab_success_status__"


def created(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[tuple[T, int]]]:
    """Mark a view that creates something: it answers its body with 201 Created."""

    @functools.wraps(view)
    async def answer(*args: P.args, **kwargs: P.kwargs) -> tuple[T, int]:
        return await view(*args, **kwargs), CREATED

    setattr(answer, _ATTR, CREATED)
    return answer


def success_status(view: Callable[..., Any] | None) -> int:
    """The status ``view`` answers when it succeeds (200 unless marked :func:`created`)."""
    status = getattr(view, _ATTR, 200)
    return status if isinstance(status, int) else 200
