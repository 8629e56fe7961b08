"""Abuse cases of the admin routes for roles, users and tokens: a caller allowed to manage
roles or users (but not an administrator) must not hand itself, or anyone, more than it holds —
by writing a rule, mapping a Kubernetes group, granting a role, creating a user with a role,
or minting a user token that carries one. ``labctl apply`` has the same rule
(tests/security/test_apply_abuse.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.apply.rig import user_with_roles
from tests.labd.harness import running_labd

DESK_RULES = (
    ("allow", "users:*", "user/*"),
    ("allow", "roles:*", "role/*"),
    ("allow", "tokens:create", "token/*"),
    ("allow", "exec:run", "server/web-*"),
    ("deny", "exec:run", "server/web-db"),
)


def _refused(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 403, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["details"]["reason"] == "escalation", error
    return error


async def test_a_role_manager_cannot_widen_what_it_holds(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            desk = await user_with_roles(labd, admin, "desk", *DESK_RULES)
            async with labd.client(admin) as http:
                resp = await http.post(
                    "/api/roles/desk-role/kubernetes-groups", json={"groups": ["helpdesk"]}
                )
                assert resp.status_code == 200, resp.text
            async with labd.client(desk) as http:
                # A role of its own with exactly what it holds: allowed.
                resp = await http.post(
                    "/api/roles",
                    json={
                        "name": "web",
                        "permissions": [
                            {"effect": "allow", "action": "exec:run", "resource": "server/web-1"}
                        ],
                        "kubernetes_groups": ["helpdesk"],
                    },
                )
                assert resp.status_code == 201, resp.text
                # Wider than held: every server, and the one server its deny rule keeps out.
                for resource in ("server/*", "server/web-db", "server/*-db"):
                    rule = {"effect": "allow", "action": "exec:run", "resource": resource}
                    error = _refused(await http.post("/api/roles/web/rules", json=rule))
                    assert "role/web" in error["message"], error
                    error = _refused(
                        await http.post("/api/roles", json={"name": "w2", "permissions": [rule]})
                    )
                    assert resource in error["message"], error
                # A deny rule only takes away.
                deny = {"effect": "deny", "action": "*", "resource": "*"}
                resp = await http.post("/api/roles/web/rules", json=deny)
                assert resp.status_code == 200, resp.text
                # Kubernetes groups: only the ones its own roles map to, on create and update.
                _refused(
                    await http.post(
                        "/api/roles", json={"name": "w3", "kubernetes_groups": ["system:masters"]}
                    )
                )
                _refused(
                    await http.post(
                        "/api/roles/web/kubernetes-groups",
                        json={"groups": ["helpdesk", "system:masters"]},
                    )
                )
                # Keeping a group it lacks while dropping others is not a widening.
                async with labd.client(admin) as admin_http:
                    resp = await admin_http.post(
                        "/api/roles/web/kubernetes-groups",
                        json={"groups": ["helpdesk", "ops"]},
                    )
                    assert resp.status_code == 200, resp.text
                resp = await http.post("/api/roles/web/kubernetes-groups", json={"groups": ["ops"]})
                assert resp.status_code == 200, resp.text
            web = await store.roles.get("web")
            assert [(p.effect.value, p.resource) for p in web.permissions][1:] == [
                ("allow", "server/web-1"),
                ("deny", "*"),
            ]
            assert web.kubernetes_groups == ("ops",)
            assert {r.name for r in await store.roles.list()} == {
                "admin", "operator", "viewer", "desk-role", "web",
            }  # fmt: skip


async def test_a_user_manager_cannot_hand_out_a_role_it_does_not_hold(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            desk = await user_with_roles(labd, admin, "desk", *DESK_RULES)
            before = await store.audit.last_seq()
            async with labd.client(desk) as http:
                # Itself, an existing user, a new user, a user token: admin is not held.
                error = _refused(
                    await http.post("/api/users/desk/grant", json={"roles": ["admin"]})
                )
                assert error["details"]["role"] == "admin", error
                _refused(
                    await http.post("/api/users", json={"name": "mallory", "roles": ["admin"]})
                )
                _refused(
                    await http.post(
                        "/api/tokens", json={"kind": "user", "user": "eve", "roles": ["admin"]}
                    )
                )
                # operator allows exec on every server: more than desk holds.
                _refused(
                    await http.post("/api/users", json={"name": "oscar", "roles": ["operator"]})
                )
                # Its own role is no escalation, and taking a role away never is.
                resp = await http.post("/api/users", json={"name": "dave", "roles": ["desk-role"]})
                assert resp.status_code == 201, resp.text
                resp = await http.post("/api/users/dave/ungrant", json={"roles": ["desk-role"]})
                assert resp.status_code == 200, resp.text
            desk_user = await store.users.get_by_name("desk")
            assert await store.users.roles_of(desk_user.id) == ["desk-role"]
            names = {u.name for u in await store.users.list()}
            assert "mallory" not in names and "oscar" not in names
            assert not [t for t in await store.tokens.list() if t.user == "eve"]
            refused = [e for e in await store.audit.list(after_seq=before) if e.result == "denied"]
            assert len(refused) == 4, refused
