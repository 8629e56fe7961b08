"""Releases end to end: a real labd (in process, real TLS, SQLite file) applying to the kmock
cluster with server-side apply."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.kube import KubeClient
from lab.kube.apply import Discovery, fetch
from lab.model.apps import ObjectRef
from tests.apps.rig import SECRET, Apps, import_cluster, module_body, write_module
from tests.kube.kmock_server import KubeAPI
from tests.labd.harness import running_labd


def ref(kind: str, name: str, api: str = "v1") -> ObjectRef:
    return ObjectRef(api_version=api, kind=kind, namespace="shop", name=name)


async def live(api: KubeAPI) -> set[str]:
    """The names of the release's objects that exist in the cluster."""
    names = set()
    async with KubeClient(api.connection()) as client:
        found = Discovery(client)
        for kind, name, version in [
            ("ConfigMap", "web-legacy", "v1"),
            ("ConfigMap", "web-extra", "v1"),
            ("ConfigMap", "web-canary", "v1"),
            ("ConfigMap", "web-bad", "v1"),
            ("PersistentVolumeClaim", "web-data", "v1"),
            ("Secret", "web-auth", "v1"),
            ("Deployment", "web", "apps/v1"),
        ]:
            if await fetch(found, ref(kind, name, version)) is not None:
                names.add(name)
    return names


async def test_install_upgrade_failed_upgrade_rollback(
    tmp_path: Path, kube_ssa: KubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    module = write_module(tmp_path / "web")
    base = {"password": SECRET}
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await import_cluster(labd, admin, "home", kube_ssa)
            async with labd.client(admin) as http:
                app = Apps(http, "home", "shop", "web")
                # Values failing the schema: the field and the rule, nothing recorded.
                bad = await app.post(
                    "install", module=module_body(module), values={**base, "replicas": 0}
                )
                assert bad.status_code == 400, bad.text
                assert bad.json()["error"]["message"].startswith(
                    "values.replicas: 0 is less than the minimum of 1 (rule minimum)"
                )
                assert bad.json()["error"]["details"]["fields"] == ["values.replicas"]

                first = await app.post(
                    "install", module=module_body(module), values=base, wait=True, timeout=20
                )
                assert first.status_code == 201, first.text
                assert first.json()["revision"] == 1
                assert first.json()["values"]["password"] == "<sealed>"
                assert await live(kube_ssa) == {"web-legacy", "web-data", "web-auth", "web"}
                again = await app.post("install", module=module_body(module), values=base)
                assert again.status_code == 409
                assert "use labctl apps upgrade web" in again.json()["error"]["message"]

                # Upgrade: one object added, one removed (pruned), the data PVC left out but kept.
                up = await app.post(
                    "upgrade",
                    module=module_body(module),
                    values={**base, "legacy": False, "extra": True, "keep_data": False},
                )
                assert up.status_code == 200, up.text
                assert up.json()["pruned"] == ["ConfigMap/shop/web-legacy"]
                assert up.json()["kept"] == ["PersistentVolumeClaim/shop/web-data (data)"]
                assert await live(kube_ssa) == {"web-extra", "web-data", "web-auth", "web"}
                # The pre-upgrade hook ran (a Job of revision 2), outside the inventory.
                async with KubeClient(kube_ssa.connection()) as client:
                    job = await fetch(Discovery(client), ref("Job", "web-backup-2", "batch/v1"))
                assert job is not None and job["status"]["succeeded"] == 1
                assert "web-backup-2" not in {i["name"] for i in up.json()["inventory"]}

                # A failed upgrade that got to apply one new object before the rejected one.
                failed = await app.post(
                    "upgrade",
                    module=module_body(module),
                    reuse_values=True,
                    values={"canary": True, "reject": True},
                )
                assert failed.status_code == 422, failed.text
                message = failed.json()["error"]["message"]
                assert "ConfigMap/shop/web-bad" in message and "the upstream refuses" in message
                assert "web-canary" in await live(kube_ssa)

                # Rollback to 1: what the failed upgrade added goes too (Helm #13346).
                back = await app.post("rollback", revision=1)
                assert back.status_code == 200, back.text
                assert back.json()["revision"] == 4
                assert back.json()["rolled_back_to"] == 1
                # The pre-rollback hook of revision 1's module (kept by labd) ran as revision 4.
                async with KubeClient(kube_ssa.connection()) as client:
                    hook = await fetch(Discovery(client), ref("Job", "web-backup-4", "batch/v1"))
                assert hook is not None
                assert await live(kube_ssa) == {"web-legacy", "web-data", "web-auth", "web"}

                history = await app.history()
                assert [(h["revision"], h["operation"], h["status"]) for h in history] == [
                    (1, "install", "superseded"),
                    (2, "upgrade", "superseded"),
                    (3, "upgrade", "failed"),
                    (4, "rollback", "deployed"),
                ]
                failed_names = {i["name"] for i in history[2]["inventory"]}
                assert "web-canary" in failed_names and "web-bad" not in failed_names
                status = await http.get("/api/apps/home/shop/web")
                assert status.status_code == 200
                assert all(o["ready"] for o in status.json()["objects"]), status.json()
                listed = await http.get("/api/apps", params={"cluster": "home"})
                assert [(a["name"], a["revision"]) for a in listed.json()["items"]] == [("web", 4)]
                audit = await http.get("/api/audit", params={"limit": "1000"})
                audit_text = audit.text
                history_text = json.dumps(history)
            db = (tmp_path / "labd" / "labd.db").read_bytes()
            wal = tmp_path / "labd" / "labd.db-wal"
            db += wal.read_bytes() if wal.exists() else b""
    # The secret value is sealed: never in the database, the answers, the audit or the logs.
    assert SECRET.encode() not in db
    assert SECRET not in history_text
    assert SECRET not in audit_text and "apps:upgrade" in audit_text
    assert all(SECRET not in r.getMessage() for r in caplog.records)


async def test_rollback_on_failure_and_concurrent_upgrades(
    tmp_path: Path, kube_ssa: KubeAPI
) -> None:
    module = write_module(tmp_path / "web")
    base: dict[str, Any] = {"password": SECRET, "legacy": False}
    with trio.fail_after(90):
        async with running_labd(tmp_path, app_lease=3.0) as labd:
            admin = await labd.admin()
            await import_cluster(labd, admin, "home", kube_ssa)
            async with labd.client(admin) as http:
                app = Apps(http, "home", "shop", "web")
                assert (
                    await app.post("install", module=module_body(module), values=base)
                ).status_code == 201
                atomic = await app.post(
                    "upgrade",
                    module=module_body(module),
                    rollback_on_failure=True,
                    values={**base, "extra": True, "reject": True},
                )
                assert atomic.status_code == 422, atomic.text
                assert (
                    "rolled back to revision 1 (now revision 3)"
                    in atomic.json()["error"]["message"]
                )
                assert "web-extra" not in await live(kube_ssa)
                statuses = [(h["revision"], h["status"]) for h in await app.history()]
                assert statuses == [(1, "superseded"), (2, "failed"), (3, "deployed")]

                # Two upgrades at once: the second is refused, naming the first's holder.
                slow_done = trio.Event()
                answers: dict[str, Any] = {}

                async def slow() -> None:
                    answers["slow"] = await app.post(
                        "upgrade",
                        module=module_body(module),
                        wait=True,
                        timeout=3,
                        values={**base, "never_ready": True},
                    )
                    slow_done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(slow)
                    # Wait until the slow one holds the release (its pending revision exists).
                    while len(await app.history()) < 4:
                        await trio.sleep(0.05)
                    second = await app.post("upgrade", module=module_body(module), values=base)
                    assert second.status_code == 409, second.text
                    err = second.json()["error"]
                    assert "another operation is running: upgrade by user/admin" in err["message"]
                    assert err["details"]["owner"]
                    await slow_done.wait()
                assert answers["slow"].status_code == 422
                assert (
                    "not ready after 3s: Deployment/shop/web"
                    in answers["slow"].json()["error"]["message"]
                )
                # The release is free again.
                ok = await app.post("upgrade", module=module_body(module), values=base)
                assert ok.status_code == 200, ok.text


async def test_refusals_unknown_version_tampered_archive_rbac(
    tmp_path: Path, kube_ssa: KubeAPI
) -> None:
    module = write_module(tmp_path / "web")
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await import_cluster(labd, admin, "home", kube_ssa)
            async with labd.client(admin) as http:
                app = Apps(http, "home", "db", "crdb")
                unknown = await app.post(
                    "install", module={"name": "cockroachdb", "version": "9.9.9"}, values={}
                )
                assert unknown.status_code == 404
                assert "has no version 9.9.9" in unknown.json()["error"]["message"]
                # A failed first install is failed; the next install replaces it (and prunes
                # what the failed attempt applied and the new one lacks).
                first = Apps(http, "home", "shop", "first")
                broken = {"password": SECRET, "canary": True, "reject": True}
                failed = await first.post("install", module=module_body(module), values=broken)
                assert failed.status_code == 422, failed.text
                assert [(h["revision"], h["status"]) for h in await first.history()] == [
                    (1, "failed")
                ]
                fixed = await first.post(
                    "install", module=module_body(module), values={"password": SECRET}
                )
                assert fixed.status_code == 201, fixed.text
                assert fixed.json()["revision"] == 2
                assert fixed.json()["pruned"] == ["ConfigMap/shop/first-canary"]
                # labd's module needs a deployed cockroachdb release on the cluster.
                alone = await Apps(http, "home", "labctl", "labd").post(
                    "install", module={"name": "labd"}, values={"ca_passphrase": "p" * 20}
                )
                assert alone.status_code == 400, alone.text
                assert "needs module cockroachdb >=1.0 deployed on cluster home" in alone.text
                body = module_body(module)
                tampered = {**body, "sha256": "0" * 64}
                refused = await app.post("install", module=tampered, values={"password": SECRET})
                assert refused.status_code == 400
                assert "the archive was changed" in refused.json()["error"]["message"]
                assert await app.history() == []
                role = {
                    "name": "shop-reader",
                    "permissions": [
                        {
                            "effect": "allow",
                            "action": "apps:read",
                            "resource": "cluster/home/namespace/shop/app/*",
                        }
                    ],
                }
                assert (await http.post("/api/roles", json=role)).status_code == 201
                user = await http.post("/api/users", json={"name": "ann", "roles": ["shop-reader"]})
                assert user.status_code == 201, user.text
            ann = await labd.enroll_user("ann", user.json()["token"])
            async with labd.client(ann) as http:
                reads = await http.get("/api/apps/home/shop/web/history")
                assert reads.status_code == 200 and reads.json() == {"items": []}
                for path in ("/api/apps/home/db/crdb/history", "/api/apps/home/shop/web/install"):
                    method = http.post if path.endswith("install") else http.get
                    kwargs = {"json": {"module": {"name": "labd"}}} if method == http.post else {}
                    denied = await method(path, **kwargs)
                    assert denied.status_code == 403, (path, denied.text)
                    action = "apps:install" if path.endswith("install") else "apps:read"
                    assert f"user/ann may not {action} on cluster/home/namespace/" in denied.text


async def test_dry_run_then_uninstall_with_data_forgets_everything(
    tmp_path: Path, kube_ssa: KubeAPI
) -> None:
    module = write_module(tmp_path / "web")
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            await import_cluster(labd, admin, "home", kube_ssa)
            async with labd.client(admin) as http:
                app = Apps(http, "home", "shop", "web")
                dry = await app.post(
                    "install", module=module_body(module), values={"password": SECRET},
                    dry_run=True,
                )  # fmt: skip
                assert dry.status_code == 201, dry.text
                assert dry.json()["dry_run"] is True
                assert "Deployment/shop/web" in dry.json()["objects"]
                assert await app.history() == []
                assert await live(kube_ssa) == set()
                done = await app.post(
                    "install",
                    module=module_body(module),
                    values={"password": SECRET, "history_max": 3},
                )
                assert done.status_code == 400  # not a parameter of the module
                done = await app.post(
                    "install",
                    module=module_body(module),
                    values={"password": SECRET},
                    history_max=3,
                )
                assert done.status_code == 201, done.text
                sealed = await labd.context.store.secrets.list("app/home/shop/web/")
                assert {s.name for s in sealed} == {
                    "app/home/shop/web/1/values",
                    "app/home/shop/web/1/manifest",
                }
                gone = await app.post("uninstall", delete_data=True)
                assert gone.status_code == 200, gone.text
                assert "PersistentVolumeClaim/shop/web-data" in gone.json()["pruned"]
                async with KubeClient(kube_ssa.connection()) as client:
                    hook = await fetch(Discovery(client), ref("Job", "web-backup-1", "batch/v1"))
                assert hook is not None  # the pre-uninstall hook ran
                assert await live(kube_ssa) == set()
                assert await app.history() == []
                assert await labd.context.store.secrets.list("app/home/shop/web/") == []
                # upgrade alone needs a deployed revision; upgrade --install installs.
                body = {"module": module_body(module), "values": {"password": SECRET}}
                missing = await app.post("upgrade", **body)
                assert missing.status_code == 404
                assert "upgrade --install" in missing.json()["error"]["message"]
                installed = await app.post("upgrade", **body, install=True)
                assert installed.status_code == 200, installed.text
                assert (installed.json()["revision"], installed.json()["operation"]) == (
                    1,
                    "install",
                )


async def test_an_unexpected_error_mid_operation_leaves_nothing_pending(
    tmp_path: Path, kube_ssa: KubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.errors import PermissionDenied
    from lab.labd.apps import engine

    module = write_module(tmp_path / "web")
    body = {"module": module_body(module), "values": {"password": SECRET}}

    async def refused(*args: object, **kwargs: object) -> tuple[list[str], list[str]]:
        raise PermissionDenied("deleting is forbidden by the cluster")

    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await import_cluster(labd, admin, "home", kube_ssa)
            async with labd.client(admin) as http:
                app = Apps(http, "home", "shop", "web")
                assert (await app.post("install", **body)).status_code == 201
                # A failure that is not an apply error, after the revision was written.
                monkeypatch.setattr(engine, "prune", refused)
                failed = await app.post("upgrade", **body)
                assert failed.status_code == 403, failed.text
                history = await app.history()
                assert [(h["revision"], h["status"]) for h in history] == [
                    (1, "deployed"),
                    (2, "failed"),
                ]
                assert "deleting is forbidden" in history[1]["description"]
                monkeypatch.undo()
                again = await app.post("upgrade", **body)
                assert again.status_code == 200, again.text
                assert again.json()["revision"] == 3
