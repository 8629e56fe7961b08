"""Role-based access control: deny overrides allow, no match is deny. Pure functions.

A permission is ``(effect, action pattern, resource pattern)``; patterns use ``*`` as the only
wildcard (any run of characters, ``/`` and ``:`` included), e.g. ``allow servers:* server/web-*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from attrs import frozen

from lab.model import Effect, Permission, Role


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    # DOTALL: '*' spans a newline too; matches() uses fullmatch, since a "$" would also match
    # before a trailing newline ("server/web" would match "server/web\n").
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.DOTALL)


def matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` as a whole; ``*`` is any run of characters."""
    return _compile(pattern).fullmatch(value) is not None


@frozen(kw_only=True)
class Rule:
    role: str
    permission: Permission

    def __str__(self) -> str:
        p = self.permission
        return f"{self.role}: {p.effect} {p.action} {p.resource}"


@frozen(kw_only=True)
class Decision:
    allowed: bool
    action: str
    resource: str
    matched: tuple[Rule, ...]
    decided_by: Rule | None  # None: nothing matched, so denied

    def explain(self) -> str:
        if self.decided_by is None:
            return f"denied: no rule matches {self.action} on {self.resource}"
        verdict = "allowed" if self.allowed else "denied"
        return f"{verdict} by {self.decided_by}"


def decide(roles: Iterable[Role], action: str, resource: str) -> Decision:
    """Evaluate every rule of ``roles`` for ``action`` on ``resource``."""
    matched = tuple(
        Rule(role=role.name, permission=p)
        for role in roles
        for p in role.permissions
        if matches(p.action, action) and matches(p.resource, resource)
    )
    deny = next((r for r in matched if r.permission.effect == Effect.DENY), None)
    if deny is not None:
        return Decision(
            allowed=False, action=action, resource=resource, matched=matched, decided_by=deny
        )
    allow = next((r for r in matched if r.permission.effect == Effect.ALLOW), None)
    return Decision(
        allowed=allow is not None,
        action=action,
        resource=resource,
        matched=matched,
        decided_by=allow,
    )


@lru_cache(maxsize=4096)
def _overlap(a: str, b: str) -> bool:
    """Whether some value matches both patterns (``server/web-*`` and ``server/*-prod`` do,
    though neither matches the other read as a value): both patterns are walked side by side,
    a literal read by the other's literal (the same one) or star; O(len(a) * len(b))."""
    start = [(i, j) for i in _skip_stars(a, 0) for j in _skip_stars(b, 0)]
    seen, todo = set(start), start
    while todo:
        i, j = todo.pop()
        if i == len(a) and j == len(b):
            return True
        if i == len(a) or j == len(b):
            continue
        x, y = a[i], b[j]
        if x == "*" and y == "*":
            continue  # a character both stars read could as well not be there
        if x == "*":
            ni, nj = i, j + 1
        elif y == "*":
            ni, nj = i + 1, j
        elif x == y:
            ni, nj = i + 1, j + 1
        else:
            continue
        for pair in [(p, q) for p in _skip_stars(a, ni) for q in _skip_stars(b, nj)]:
            if pair not in seen:
                seen.add(pair)
                todo.append(pair)
    return False


def _skip_stars(pattern: str, i: int) -> list[int]:
    """Positions reachable from ``i`` by letting stars match nothing."""
    out = [i]
    while i < len(pattern) and pattern[i] == "*":
        i += 1
        out.append(i)
    return out


def covers(roles: Iterable[Role], permission: Permission) -> bool:
    """Whether holders of ``roles`` may already do everything ``permission`` allows, so
    writing it (into a role, or granting a role that has it) gives them nothing new.

    A deny rule takes away only, so it is always covered. An allow rule is covered when its
    patterns, read as values, are allowed and none of the holders' deny rules overlaps it.
    """
    if permission.effect == Effect.DENY:
        return True
    roles = tuple(roles)
    if not decide(roles, permission.action, permission.resource).allowed:
        return False
    return not any(
        p.effect == Effect.DENY
        and _overlap(p.action, permission.action)
        and _overlap(p.resource, permission.resource)
        for role in roles
        for p in role.permissions
    )
