"""Abuse cases of ``labctl apply`` (POST /api/apply), against a real labd.

Who may apply what: every object is judged by the caller's own RBAC, and an apply cannot hand
its caller more than it holds (a rule written into a role, a role granted to a user). Prune
removes only what its own set recorded. Secret values travel by reference and are read by
labctl, never stored in the set's inventory or written to the audit log.
"""

from __future__ import annotations

from pathlib import Path

import trio

from lab.model.declared import ObjectKey
from tests.apply.rig import apply, role, user, user_with_roles
from tests.labd.harness import running_labd


async def test_a_viewer_apply_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            token = await labd.create_token(admin, "user", user="vera", roles=["viewer"])
            viewer = await labd.enroll_user("vera", token)
            before = await store.audit.last_seq()
            async with labd.client(viewer) as http:
                resp = await apply(
                    http, role("mine", "", ("allow", "*:*", "*")), user("vera", "mine")
                )
                assert resp.status_code == 403, resp.text
                assert "apply:run on apply/*" in resp.json()["error"]["message"]
                # A dry run asks the same questions.
                resp = await apply(http, role("mine"), dry_run=True)
                assert resp.status_code == 403
            assert [r.name for r in await store.roles.list()] == ["admin", "operator", "viewer"]
            vera = await store.users.get_by_name("vera")
            assert await store.users.roles_of(vera.id) == ["viewer"]
            entries = await store.audit.list(after_seq=before)
            assert [(e.action, e.result) for e in entries] == [("apply:run", "denied")] * 2


async def test_an_apply_cannot_grant_its_caller_more_than_it_holds(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            # A help desk may use apply, manage users and its own role, and read roles.
            desk = await user_with_roles(
                labd,
                admin,
                "desk",
                ("allow", "users:*", "user/*"),
                ("allow", "roles:*", "role/desk-role"),
                ("allow", "roles:get", "role/*"),
                ("allow", "apply:run", "apply/*"),
            )
            desk_rules = (await store.roles.get("desk-role")).permissions
            async with labd.client(desk) as http:
                # Granting itself admin: users:grant on user/desk is allowed, admin is not held.
                resp = await apply(http, user("desk", "desk-role", "admin"))
                assert resp.status_code == 403, resp.text
                assert resp.json()["error"]["details"]["reason"] == "escalation"
                # Widening its own role: roles:update on role/desk-role is allowed, *:* is not.
                resp = await apply(
                    http,
                    role(
                        "desk-role",
                        "",
                        ("allow", "users:*", "user/*"),
                        ("allow", "roles:*", "role/desk-role"),
                        ("allow", "apply:run", "apply/*"),
                        ("allow", "*:*", "*"),
                    ),
                )
                assert resp.status_code == 403, resp.text
                assert resp.json()["error"]["details"]["reason"] == "escalation"
                # Both in one apply: still each object judged, nothing written.
                resp = await apply(
                    http,
                    role("root2", "", ("allow", "*:*", "*")),
                    user("desk", "desk-role", "root2"),
                )
                assert resp.status_code == 403, resp.text
                # Mapping its own role to system:masters gives kube admin: refused too.
                resp = await apply(
                    http,
                    {
                        "kind": "Role",
                        "name": "desk-role",
                        "spec": {
                            "rules": [
                                {
                                    "effect": r.effect.value,
                                    "action": r.action,
                                    "resource": r.resource,
                                }
                                for r in desk_rules[1:]
                            ],
                            "kubernetes_groups": ["system:masters"],
                        },
                    },
                )
                assert resp.status_code == 403, resp.text
                assert "system:masters" in resp.json()["error"]["message"]
                # What it does hold, it may hand out: a user with the desk role.
                resp = await apply(http, user("dora", "desk-role"))
                assert resp.status_code == 200, resp.text
            desk_user = await store.users.get_by_name("desk")
            assert await store.users.roles_of(desk_user.id) == ["desk-role"]
            assert (await store.roles.get("desk-role")).permissions == desk_rules
            assert "root2" not in [r.name for r in await store.roles.list()]


async def test_prune_never_removes_another_set_or_hand_made_objects(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await http.post("/api/roles", json={"name": "by-hand", "permissions": []})
                assert resp.status_code == 201, resp.text
                assert (await apply(http, role("ra"), user("ua"), set="a")).status_code == 200
                assert (await apply(http, role("rb"), user("ub"), set="b")).status_code == 200
                # Set b takes a's role: refused, it belongs to a.
                resp = await apply(http, role("ra", "mine now"), set="b")
                assert resp.status_code == 409, resp.text
                assert resp.json()["error"]["details"]["set"] == "a"
                # Prune b with empty files: only rb and ub go.
                resp = await apply(http, set="b", prune=True)
                assert resp.status_code == 200, resp.text
                pruned = {(r["kind"], r["name"], r["action"]) for r in resp.json()["results"]}
                assert pruned == {("Role", "rb", "pruned"), ("User", "ub", "disabled")}
            roles = [r.name for r in await store.roles.list()]
            assert "ra" in roles and "by-hand" in roles and "rb" not in roles
            assert not (await store.users.get_by_name("ua")).disabled
            assert not (await store.users.get_by_name("admin")).disabled
            assert {r.key for r in await store.apply.inventory("a")} == {
                ObjectKey(kind="Role", name="ra"),
                ObjectKey(kind="User", name="ua"),
            }


async def test_a_set_records_and_drops_only_what_its_caller_may_install_and_remove(
    tmp_path: Path,
) -> None:
    """Apps, clusters and machines are applied by labctl with the caller's identity; labd asks
    the same questions before it records one in a set or drops it from one, so an apply cannot
    make a set forget an app its caller could not uninstall."""
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            app = {
                "kind": "App",
                "name": "shop",
                "spec": {"module": "web", "cluster": "home", "namespace": "prod"},
            }
            async with labd.client(admin) as http:
                assert (await apply(http, app, set="lab")).status_code == 200
            limited = await user_with_roles(
                labd, admin, "lim", ("allow", "apply:run", "apply/*"), ("allow", "roles:*", "*")
            )
            async with labd.client(limited) as http:
                resp = await apply(http, set="lab", prune=True)
                assert resp.status_code == 403, resp.text
                assert "apps:uninstall on cluster/home/namespace/prod/app/shop" in resp.text
                other = {**app, "name": "mine"}
                resp = await apply(http, other, set="own")
                assert resp.status_code == 403, resp.text
                assert "apps:install" in resp.text
            rows = await labd.context.store.apply.inventory(
                None, [ObjectKey(kind="App", name="shop")]
            )
            assert [r.set_name for r in rows] == ["lab"]
            assert await labd.context.store.apply.inventory("own") == []


async def test_pruning_the_last_admin_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await apply(http, user("admin", "admin"), set="lab")
                assert resp.status_code == 200, resp.text
                resp = await apply(http, set="lab", prune=True)
                assert resp.status_code == 409, resp.text
                assert resp.json()["error"]["details"]["reason"] == "last_admin"
            assert not (await labd.context.store.users.get_by_name("admin")).disabled


async def test_secret_values_are_references_read_by_labctl(tmp_path: Path) -> None:
    """A kubeconfig is named by file or environment variable; an inline value is refused,
    and the reference (never the value) is what the set records and the audit log keeps."""
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            secret = "apiVersion: v1\nusers: [{user: {token: s3cr3t-t0ken}}]\n"
            async with labd.client(admin) as http:
                inline = {"kind": "Cluster", "name": "home", "spec": {"kubeconfig": secret}}
                resp = await apply(http, inline, set="lab")
                assert resp.status_code == 400
                assert resp.json()["error"]["details"]["fields"] == ["spec.kubeconfig"]
                ref = {"kind": "Cluster", "name": "home", "spec": {"kubeconfig": {"env": "KC"}}}
                resp = await apply(http, ref, set="lab")
                assert resp.status_code == 200, resp.text
            (row,) = await store.apply.inventory("lab")
            assert row.applied == {"spec": {"kubeconfig": {"env": "KC"}}}
            db = (labd.data_dir / "labd.db").read_bytes()
            assert b"s3cr3t-t0ken" not in db
