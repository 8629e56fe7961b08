"""What both backends decide the same way: the errors a missing or duplicate record raises,
why a join token was refused, when a role may be deleted, how labels change, and the one query
they build alike (a filtered page of the audit log).
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import attrs

from lab.errors import Conflict, Invalid, NotFound, Unauthenticated
from lab.model import JoinToken, Role
from lab.store.rows import AUDIT_COLS, RowCodec

MAX_PAGE = 10_000
"""The most audit entries one ``list`` call returns."""


def not_found(kind: str, key: str, *, resource: str | None = None) -> NotFound:
    """``NotFound`` for the ``kind`` keyed ``key``; its resource is ``<resource or kind>/<key>``."""
    return NotFound(f"{kind} {key!r} not found", details={"resource": f"{resource or kind}/{key}"})


def already_exists(kind: str, name: str) -> Conflict:
    return Conflict(f"{kind} {name!r} already exists", details={"name": name})


# --- join tokens ----------------------------------------------------------------------------


def token_refusal(token: JoinToken | None, at: datetime) -> Unauthenticated:
    """Why a consume at ``at`` matched no row; ``token`` as read afterwards (None: no such id).

    Only the message depends on this: the conditional UPDATE already made the decision.
    """
    if token is None:
        reason = "unknown"
    elif token.revoked_at is not None:
        reason = "revoked"
    elif token.expires_at <= at:
        reason = "expired"
    else:
        reason = "used"
    return Unauthenticated(f"join token cannot be used ({reason})", details={"reason": reason})


def before_use(consumed: JoinToken) -> JoinToken:
    """The token as it was before the use that returned ``consumed``."""
    return attrs.evolve(consumed, uses=consumed.uses - 1)


# --- roles and servers ----------------------------------------------------------------------


def check_role_deletable(role: Role, holders: int) -> None:
    """Raise ``Conflict`` for a builtin role or one still held by ``holders`` users."""
    if role.builtin:
        raise Conflict(f"role {role.name!r} is builtin and cannot be deleted")
    if holders:
        raise Conflict(
            f"role {role.name!r} is still held by {holders} user(s)",
            details={"holders": holders},
        )


def merge_labels(
    labels: Mapping[str, str], set_: Mapping[str, str], remove: Sequence[str]
) -> dict[str, str]:
    """``labels`` without the keys in ``remove``, then with ``set_`` (which wins)."""
    removed = set(remove)
    merged = {k: v for k, v in labels.items() if k not in removed}
    merged.update(set_)
    return merged


# --- audit ----------------------------------------------------------------------------------


def audit_page(
    codec: RowCodec,
    mark: str,
    *,
    user: str | None,
    action: str | None,
    since: datetime | None,
    after_seq: int,
    limit: int,
) -> tuple[str, list[object]]:
    """The query and parameters of one page of :meth:`AuditRepository.list`, with ``mark`` as
    the driver's placeholder. Raises ``Invalid`` for a ``limit`` outside 1..``MAX_PAGE``."""
    if not 0 < limit <= MAX_PAGE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE}", details={"limit": limit})
    clauses: list[str] = [f"seq > {mark}"]
    params: list[object] = [after_seq]
    if user is not None:
        clauses.append(f'"user" = {mark}')
        params.append(user)
    if action is not None:
        clauses.append(f"action = {mark}")
        params.append(action)
    if since is not None:
        clauses.append(f"time >= {mark}")
        params.append(codec.time(since))
    where = " AND ".join(clauses)
    query = f"SELECT {AUDIT_COLS} FROM audit WHERE {where} ORDER BY seq LIMIT {mark}"
    return query, [*params, limit]
