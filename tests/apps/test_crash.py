"""kill -9 of labd in the middle of an upgrade: the release's lease runs out, the revision it
left is failed (audited), and the next upgrade proceeds. No manual surgery."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.apps.rig import SECRET, module_body, write_module
from tests.e2e.procs import free_port
from tests.kube.kmock_server import KubeAPI
from tests.rbac.test_crash import client, enroll_admin
from tests.security.audit_rig import labd_process

APP = "/api/apps/home/shop/web"


async def history(http: httpx.AsyncClient) -> list[tuple[int, str]]:
    resp = await http.get(f"{APP}/history")
    assert resp.status_code == 200, resp.text
    return [(i["revision"], i["status"]) for i in resp.json()["items"]]


# The upgrade's request is cut by the kill; httpx leaves its body generator to the GC.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_kill_9_mid_upgrade_fails_by_lease_and_the_next_upgrade_succeeds(
    tmp_path: Path, kube_ssa: KubeAPI
) -> None:
    data = tmp_path / "labd"
    port = free_port()
    module = module_body(write_module(tmp_path / "web"))
    values: dict[str, Any] = {"password": SECRET}
    with trio.fail_after(120):
        async with labd_process(data, port, LABD_APP_LEASE="1") as proc:
            admin = await enroll_admin(data, port)
            async with client(data, port, admin) as http:
                done = await http.post(
                    "/api/clusters/import", json={"name": "home", "kubeconfig": kube_ssa.kubeconfig}
                )
                assert done.status_code == 201, done.text
                done = await http.post(f"{APP}/install", json={"module": module, "values": values})
                assert done.status_code == 201, done.text

                async def stuck_upgrade() -> None:
                    body = {
                        "module": module,
                        "values": {**values, "never_ready": True},
                        "wait": True,
                        "timeout": 120,
                    }
                    with contextlib.suppress(httpx.TransportError):  # labd is killed under it
                        await http.post(f"{APP}/upgrade", json=body, timeout=120)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stuck_upgrade)
                    while await history(http) != [(1, "deployed"), (2, "pending-upgrade")]:
                        await trio.sleep(0.05)
                    os.kill(proc.pid, signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL

        async with labd_process(data, port, LABD_APP_LEASE="1"), client(data, port, admin) as http:
            # A new replica id: only the lease running out frees the release.
            while (await history(http))[-1][1] != "failed":
                await trio.sleep(0.1)
            assert await history(http) == [(1, "deployed"), (2, "failed")]
            entries = (await http.get("/api/audit", params={"action": "apps:upgrade"})).json()
            ended = [e for e in entries["items"] if e["result"] == "error"]
            assert ended and ended[-1]["details"]["revision"] == 2
            assert "lease" in ended[-1]["details"]["error"]
            again = await http.post(f"{APP}/upgrade", json={"module": module, "values": values})
            assert again.status_code == 200, again.text
            assert again.json()["revision"] == 3
            assert await history(http) == [(1, "superseded"), (2, "failed"), (3, "deployed")]
            installs = (await http.get("/api/audit", params={"action": "apps:install"})).json()
            assert any(e["details"].get("revision") == 1 for e in installs["items"]), installs
            assert all(
                e["resource"] == "cluster/home/namespace/shop/app/web" for e in installs["items"]
            )
            audit_text = (await http.get("/api/audit", params={"limit": "500"})).text
            assert SECRET not in audit_text
