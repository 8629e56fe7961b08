"""RBAC decisions, table-driven: deny overrides allow, wildcards, no match is deny."""

from __future__ import annotations

import pytest

from lab.labd.access import rbac
from lab.model import Effect, Permission, Role
from lab.store.seed import ADMIN, OPERATOR, VIEWER


def role(name: str, *rules: str) -> Role:
    perms = []
    for rule in rules:
        effect, action, resource = rule.split()
        perms.append(Permission(effect=Effect(effect), action=action, resource=resource))
    return Role(name=name, permissions=tuple(perms))


WEB = role("web", "allow exec:* server/web-*", "deny exec:* server/web-db")
READ = role("read", "allow servers:get *", "allow servers:list server/*")
NOTHING = role("nothing")

# roles, action, resource, allowed, the rule that decides (None: nothing matched)
CASES = [
    ((WEB,), "exec:run", "server/web-1", True, "web: allow exec:* server/web-*"),
    ((WEB,), "exec:run", "server/web-db", False, "web: deny exec:* server/web-db"),
    ((WEB,), "exec:run", "server/db-1", False, None),
    ((WEB,), "logs:read", "server/web-1", False, None),
    ((WEB, READ), "servers:get", "server/web-db", True, "read: allow servers:get *"),
    # a deny in one role beats an allow in another, whatever the order of the roles
    ((READ, WEB), "exec:run", "server/web-db", False, "web: deny exec:* server/web-db"),
    (
        (role("a", "allow *:* *"), role("d", "deny exec:run *")),
        "exec:run",
        "x",
        False,
        "d: deny exec:run *",
    ),
    (
        (role("d", "deny exec:run *"), role("a", "allow *:* *")),
        "exec:run",
        "x",
        False,
        "d: deny exec:run *",
    ),
    # '*' matches any run of characters, '/' and ':' included, and only whole values
    (
        (role("w", "allow servers:* server/*"),),
        "servers:label",
        "server/a/b",
        True,
        "w: allow servers:* server/*",
    ),
    ((role("w", "allow servers:get server/web"),), "servers:get", "server/web1", False, None),
    ((role("w", "allow servers:get server/web"),), "servers:get", "xserver/web", False, None),
    ((role("w", "allow s*:g*t s*"),), "servers:get", "server/x", True, "w: allow s*:g*t s*"),
    # regex characters are literal
    ((role("w", "allow servers:get server/a.b"),), "servers:get", "server/axb", False, None),
    (
        (role("w", "allow servers:get server/[ab]"),),
        "servers:get",
        "server/[ab]",
        True,
        "w: allow servers:get server/[ab]",
    ),
    ((NOTHING,), "servers:list", "server/*", False, None),
    ((), "servers:list", "server/*", False, None),
    # builtin roles
    ((ADMIN,), "users:create", "user/*", True, "admin: allow *:* *"),
    ((OPERATOR,), "exec:run", "server/web1", True, "operator: allow exec:* server/*"),
    ((OPERATOR,), "users:create", "user/*", False, "operator: deny users:* *"),
    ((OPERATOR,), "tokens:create", "token/*", False, "operator: deny tokens:* *"),
    ((OPERATOR,), "ca:rotate", "ca/*", False, "operator: deny ca:* *"),
    ((OPERATOR,), "roles:update", "role/x", False, "operator: deny roles:* *"),
    ((VIEWER,), "servers:list", "server/*", True, "viewer: allow servers:list server/*"),
    ((VIEWER,), "exec:run", "server/web1", False, "viewer: deny exec:* *"),
    ((VIEWER,), "logs:read", "server/web1", False, "viewer: deny logs:* *"),
    ((VIEWER,), "servers:exec", "server/web1", False, "viewer: deny servers:exec *"),
    ((VIEWER,), "servers:label", "server/web1", False, None),
    ((VIEWER,), "audit:read", "audit/*", False, None),
]


@pytest.mark.parametrize(("roles", "action", "resource", "allowed", "by"), CASES)
def test_decide(
    roles: tuple[Role, ...], action: str, resource: str, allowed: bool, by: str | None
) -> None:
    decision = rbac.decide(roles, action, resource)
    assert decision.allowed is allowed
    assert (str(decision.decided_by) if decision.decided_by else None) == by
    if by is None:
        assert not decision.matched and decision.explain().startswith("denied: no rule")


@pytest.mark.parametrize("builtin", [ADMIN, OPERATOR, VIEWER], ids=lambda r: r.name)
@pytest.mark.parametrize(
    ("action", "resource"),
    [("auth:whoami", "user/self"), ("auth:renew", "cert/self"), ("auth:can-i", "user/self")],
)
def test_every_builtin_role_has_self_service(builtin: Role, action: str, resource: str) -> None:
    assert rbac.decide([builtin], action, resource).allowed


@pytest.mark.parametrize("builtin", [OPERATOR, VIEWER], ids=lambda r: r.name)
def test_self_service_does_not_reach_other_identities(builtin: Role) -> None:
    assert not rbac.decide([builtin], "auth:explain", "user/*").allowed
    assert not rbac.decide([builtin], "auth:whoami", "user/ann").allowed


def test_matched_lists_every_matching_rule_in_order() -> None:
    decision = rbac.decide([READ, WEB], "exec:run", "server/web-db")
    assert [str(r) for r in decision.matched] == [
        "web: allow exec:* server/web-*",
        "web: deny exec:* server/web-db",
    ]
