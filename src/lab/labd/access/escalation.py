"""No escalation through the admin routes: a rule written into a role, a Kubernetes group
mapped to a role, or a role handed out (granted to a user, given to a new user, carried by a
user token) must give nothing its caller does not already hold. ``labctl apply`` asks the same
questions of a whole document set (lab.labd.api.apply)."""

from __future__ import annotations

from collections.abc import Iterable

from lab.errors import PermissionDenied
from lab.labd.access import rbac
from lab.labd.access.auth import Principal
from lab.model import Permission, Role


def _refuse(message: str, target: str, **details: str) -> PermissionDenied:
    return PermissionDenied(message, details={"object": target, "reason": "escalation", **details})


def check_rule(who: Principal, target: str, perm: Permission) -> None:
    """``who`` may write ``perm`` into the role ``target`` (a deny rule always)."""
    if not rbac.covers(who.roles, perm):
        raise _refuse(
            f"{who.subject} may not write '{perm.effect} {perm.action} {perm.resource}' into "
            f"{target}: it allows more than {who.subject} holds",
            target,
        )


# Kubernetes' superuser group: whoever is impersonated into it may already do anything a
# group could grant.
SUPERUSER_GROUP = "system:masters"


def missing_groups(who: Principal, groups: Iterable[str]) -> list[str]:
    """The ``groups`` no role of ``who`` maps to (none when one maps to system:masters)."""
    held = {group for role in who.roles for group in role.kubernetes_groups}
    return [] if SUPERUSER_GROUP in held else sorted(set(groups) - held)


def check_groups(who: Principal, target: str, groups: Iterable[str]) -> None:
    """``who`` may map the role ``target`` to ``groups``: only groups a role of theirs maps to."""
    missing = missing_groups(who, groups)
    if missing:
        raise _refuse(
            f"{who.subject} may not map {target} to Kubernetes group {missing[0]!r}: no role "
            f"of {who.subject} maps to it",
            target,
        )


def check_handout(who: Principal, target: str, role: Role) -> None:
    """``who`` may hand ``role`` to ``target`` (a user, or a user token): a role it holds
    itself, or one whose every rule and group it holds."""
    if any(held.name == role.name for held in who.roles):
        return
    missing = missing_groups(who, role.kubernetes_groups)
    if missing:
        raise _refuse(
            f"{who.subject} may not give role {role.name!r} to {target}: it maps to "
            f"Kubernetes group {missing[0]!r}, which {who.subject} does not hold",
            target,
            role=role.name,
        )
    for perm in role.permissions:
        if not rbac.covers(who.roles, perm):
            raise _refuse(
                f"{who.subject} may not give role {role.name!r} to {target}: it allows "
                f"'{perm.action} {perm.resource}', which {who.subject} does not hold",
                target,
                role=role.name,
            )


__all__ = ["SUPERUSER_GROUP", "check_groups", "check_handout", "check_rule", "missing_groups"]
