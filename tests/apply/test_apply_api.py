"""POST /api/apply against a real labd: all or nothing (checked in the database), dry runs
write nothing, concurrent applies of conflicting versions end in one 409 naming the field,
delete -f, and the audit entries of one apply."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.apply.rig import apply, role, user
from tests.labd.harness import running_labd


async def test_a_bad_object_fails_the_whole_apply(tmp_path: Path, labd_database: str) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path, database_url=labd_database) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            before = await store.audit.last_seq()
            async with labd.client(admin) as http:
                bad_field = {"kind": "User", "name": "bo", "spec": {"roles": [], "rolez": []}}
                source = {"file": "lab/users.yaml", "index": 2}
                resp = await apply(http, role("ops"), {**bad_field, "source": source}, set="lab")
                assert resp.status_code == 400, resp.text
                error = resp.json()["error"]
                assert error["message"] == (
                    "lab/users.yaml: document 2: spec.rolez: is not a known field"
                )
                # Valid documents, but one names a role that exists nowhere: nothing written.
                resp = await apply(http, role("ops"), user("bo", "ops"), user("cy", "nope"))
                assert resp.status_code == 400, resp.text
                assert "unknown role 'nope'" in resp.json()["error"]["message"]
                # A server that is not enrolled.
                server = {"kind": "Server", "name": "ghost", "labels": {"a": "b"}}
                resp = await apply(http, role("ops"), server)
                assert resp.status_code == 404, resp.text
            assert "ops" not in [r.name for r in await store.roles.list()]
            assert [u.name for u in await store.users.list()] == ["admin"]
            assert await store.apply.inventory("lab") == []
            entries = await store.audit.list(after_seq=before)
            assert all(e.result == "error" for e in entries) and len(entries) == 3


async def test_dry_run_writes_nothing_and_apply_writes_one_entry_per_change(
    tmp_path: Path, labd_database: str
) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path, database_url=labd_database) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            async with labd.client(admin) as http:
                objects = (role("ops", "", ("allow", "servers:*", "server/*")), user("bo", "ops"))
                resp = await apply(http, *objects, set="lab", dry_run=True)
                assert resp.status_code == 200, resp.text
                assert resp.json()["changes"] == 2
                assert "ops" not in [r.name for r in await store.roles.list()]
                assert await store.apply.inventory("lab") == []
                before = await store.audit.last_seq()
                resp = await apply(http, *objects, set="lab")
                assert resp.status_code == 200, resp.text
            entries = await store.audit.list(after_seq=before)
            assert [(e.action, e.resource) for e in entries] == [
                ("apply", "apply/lab"),
                ("apply:create", "role/ops"),
                ("apply:create", "user/bo"),
            ]
            assert entries[2].details["set"] == "lab" and entries[2].user == "user/admin"
            assert entries[2].details["fields"] == ["*"]


async def test_concurrent_applies_of_conflicting_versions_one_409(
    tmp_path: Path, labd_database: str
) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path, database_url=labd_database) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            async with labd.client(admin) as http:
                assert (await apply(http, role("ops", "first"))).status_code == 200
                exported = (await http.get("/api/apply/objects/roles/ops")).json()
                version = exported["metadata"]["resourceVersion"]
                answers: list[int] = []
                messages: list[dict[str, object]] = []

                async def one(description: str) -> None:
                    body = {**role("ops", description), "resource_version": version}
                    resp = await apply(http, body)
                    answers.append(resp.status_code)
                    if resp.status_code == 409:
                        messages.append(resp.json()["error"])

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(one, "from alice")
                    nursery.start_soon(one, "from bob")
            assert sorted(answers) == [200, 409]
            (error,) = messages
            assert error["details"]["fields"] == ["spec.description"]  # type: ignore[index]
            kept = (await labd.context.store.roles.get("ops")).description
            assert kept in ("from alice", "from bob")


async def test_delete_removes_what_the_documents_declare(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            async with labd.client(admin) as http:
                labels = {"kind": "Server", "name": "web1", "labels": {"zone": "a", "os": "f"}}
                objects = (role("ops"), user("bo"), labels)
                assert (await apply(http, *objects)).status_code == 200
                await store.servers.set_labels("web1", {"by-hand": "yes"}, ())
                only_zone = {**labels, "labels": {"zone": "a"}}
                resp = await apply(http, role("ops"), user("bo"), only_zone, mode="delete")
                assert resp.status_code == 200, resp.text
                actions = {r["name"]: r["action"] for r in resp.json()["results"]}
                assert actions == {"ops": "deleted", "bo": "disabled", "web1": "deleted"}
            assert "ops" not in [r.name for r in await store.roles.list()]
            assert (await store.users.get_by_name("bo")).disabled
            assert (await store.servers.get_by_name("web1")).labels == {"os": "f", "by-hand": "yes"}


async def test_prune_takes_off_only_the_labels_the_set_applied(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            store = labd.context.store
            admin = await labd.admin()
            await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            async with labd.client(admin) as http:
                labels = {"kind": "Server", "name": "web1", "labels": {"zone": "a"}}
                assert (await apply(http, labels, set="lab")).status_code == 200
                # By hand, after the apply: kept by the prune (the set never applied it).
                await store.servers.set_labels("web1", {"by-hand": "yes"}, ())
                resp = await apply(http, set="lab", prune=True, dry_run=True)
                assert [(r["name"], r["action"]) for r in resp.json()["results"]] == [
                    ("web1", "pruned")
                ]
                assert (await store.servers.get_by_name("web1")).labels["zone"] == "a"
                resp = await apply(http, set="lab", prune=True)
                assert resp.status_code == 200, resp.text
            assert (await store.servers.get_by_name("web1")).labels == {"by-hand": "yes"}
            assert await store.apply.inventory("lab") == []
