"""labd's own resources as ``labctl apply`` declares them: one canonical form per kind, the
``resourceVersion`` of a state, and which fields differ between two states. Pure.

An object is ``(kind, name, labels, spec)``. Its ``resourceVersion`` is a digest of exactly
that canonical form, so every change by any path (``labctl roles``, ``users grant``,
``labctl label`` or an apply) moves it, and two reads of an unchanged object agree without a
counter kept on every write path. Two states that are equal have the same version: for
optimistic concurrency that is what matters (the change being refused is one made on a state
that is no longer there).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from attrs import Factory, frozen

from lab.model.records import Permission, Role, Server, User

APPLIED_BY_LABD = ("Role", "User", "Server")
"""Kinds labd applies itself, in one transaction (the order changes are made in)."""

Action = Literal["create", "update", "prune", "delete"]


@frozen(kw_only=True)
class ObjectKey:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


@frozen(kw_only=True)
class Declared:
    """One object in canonical form: lists that are sets are sorted, defaults filled in."""

    kind: str
    name: str
    labels: dict[str, str] = Factory(dict)
    spec: dict[str, Any] = Factory(dict)
    builtin: bool = False
    """A role labd restores at every start: it cannot be changed (not part of the state)."""

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(kind=self.kind, name=self.name)

    def body(self) -> dict[str, Any]:
        """The versioned part: what the digest covers and what diffs compare."""
        return {"metadata": {"labels": dict(sorted(self.labels.items()))}, "spec": self.spec}

    @property
    def version(self) -> str:
        return resource_version(self)


def resource_version(obj: Declared) -> str:
    text = json.dumps(
        {"kind": obj.kind, "name": obj.name, **obj.body()}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rule_view(p: Permission) -> dict[str, str]:
    return {"effect": p.effect.value, "action": p.action, "resource": p.resource}


def role_object(role: Role, *, self_service: Permission) -> Declared:
    """A role as declared. The self-service rule labd puts first on every role it creates is
    left out when it is first, so a document without it stays unchanged after apply."""
    rules = list(role.permissions)
    if rules and rules[0] == self_service:
        rules = rules[1:]
    return Declared(
        kind="Role",
        name=role.name,
        spec={
            "description": role.description,
            "rules": [rule_view(p) for p in rules],
            "kubernetes_groups": list(role.kubernetes_groups),
        },
        builtin=role.builtin,
    )


def user_object(user: User, roles: Iterable[str]) -> Declared:
    return Declared(
        kind="User",
        name=user.name,
        spec={"roles": sorted(set(roles)), "disabled": user.disabled},
    )


def server_object(server: Server) -> Declared:
    """A server as declared: its labels only (facts are observed, not declared)."""
    return Declared(kind="Server", name=server.name, labels=dict(server.labels))


def changed_fields(before: Declared | None, after: Declared | None) -> list[str]:
    """Field paths (``spec.roles``, ``metadata.labels.zone``) whose values differ; a whole
    object created or removed is ``["*"]``."""
    if before is None or after is None:
        return [] if before is after else ["*"]
    out: list[str] = []
    _walk(before.body(), after.body(), "", out)
    return out


def _walk(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            _walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), out)
    elif a != b:
        out.append(path)


@frozen(kw_only=True)
class Change:
    """One change an apply makes: ``before`` is the state the plan was made on (None: absent)
    and ``after`` the state it writes (None: removed)."""

    action: Action
    before: Declared | None
    after: Declared | None
    fields: tuple[str, ...] = ()

    @property
    def key(self) -> ObjectKey:
        obj = self.after or self.before
        assert obj is not None
        return obj.key


@frozen(kw_only=True)
class Claim:
    """An object an apply records in its set's inventory; ``owner`` is the set that recorded
    it when the plan was made (None: no set)."""

    key: ObjectKey
    owner: str | None
    applied: dict[str, Any] = Factory(dict)
    """What the set applied (for a Server, the labels it owns)."""


@frozen(kw_only=True)
class Plan:
    """What one apply writes, in one transaction (lab.store's ``ApplyRepository.commit``)."""

    set_name: str | None
    changes: tuple[Change, ...] = ()
    seen: tuple[tuple[ObjectKey, Declared | None], ...] = ()
    """Each labd-side object as the plan read it: the commit refuses (``Conflict``) when one
    moved meanwhile, unless ``force``."""
    claims: tuple[Claim, ...] = ()
    """Objects recorded in the set's inventory (set_name must be given)."""
    release: tuple[ObjectKey, ...] = ()
    """Objects dropped from the set's inventory (pruned)."""
    force: bool = False
    who: str = ""


@frozen(kw_only=True)
class InventoryRow:
    key: ObjectKey
    set_name: str
    applied: dict[str, Any] = Factory(dict)
    applied_by: str = ""
