"""The bastion's HTTP API against a real server on loopback and a real SQLite store."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from lab.bastion.jointokens import AgentToken, TokenBinding
from lab.bastion.service import Bastion
from lab.bastion.templates import Templates
from lab.model import MachineState
from lab.store import open_store
from tests.bastion.conftest import INVENTORY, SSH_KEY, Running, start_bastion

MAC = "52:54:00:12:34:56"


async def _discover(b: Running, body: object = None) -> None:
    token = await b.discovery_token()
    r = await b.client.post(
        "/api/discover", json=body or INVENTORY, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text


async def test_healthz(bastion: Running) -> None:
    r = await bastion.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_admin_token_file_is_private_and_required(bastion: Running) -> None:
    mode = stat.S_IMODE((bastion.data_dir / "admin-token").stat().st_mode)
    assert mode == 0o600
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": bastion.admin_token}):
        r = await bastion.client.get("/api/machines", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthenticated"
    assert (await bastion.client.get("/api/machines", headers=bastion.admin)).status_code == 200


async def test_discover_records_inventory_in_one_mac_form(bastion: Running) -> None:
    await _discover(bastion, {**INVENTORY, "mac": "52-54-00-12-34-56"})
    r = await bastion.client.get("/api/machines/5254.0012.3456", headers=bastion.admin)
    body = r.json()
    assert body["mac"] == MAC and body["state"] == "discovered"
    assert body["inventory"]["nics"][0]["mac"] == MAC
    assert body["inventory"]["disks"][0]["rotational"] is False
    assert "callback_hash" not in body["settings"]


async def test_discover_needs_the_discovery_token(bastion: Running) -> None:
    r = await bastion.client.post("/api/discover", json=INVENTORY)
    assert r.status_code == 401
    r = await bastion.client.post(
        "/api/discover", json=INVENTORY, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401


async def test_bad_inventory_is_400_naming_fields(bastion: Running) -> None:
    token = await bastion.discovery_token()
    bad = {**INVENTORY, "firmware": "coreboot", "memory_bytes": "8G", "extra": 1}
    r = await bastion.client.post(
        "/api/discover", json=bad, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 400
    fields = " ".join(r.json()["error"]["details"]["fields"])
    assert "body.firmware" in fields and "body.memory_bytes" in fields
    r = await bastion.client.post(
        "/api/discover", content=b"{not json", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 400


async def test_oversized_inventory_is_413(bastion: Running) -> None:
    token = await bastion.discovery_token()
    nics = [{"name": f"eth{i}", "mac": MAC, "driver": "x" * 100} for i in range(3000)]
    r = await bastion.client.post(
        "/api/discover",
        json={**INVENTORY, "nics": nics},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"


async def test_install_validates_everything_before_anything_is_rendered(bastion: Running) -> None:
    cases = {
        "hostname": {"hostname": "bad_name"},
        "role": {"role": "database"},
        "disk": {"disk": "sda"},
        "ssh_keys[0]": {"ssh_keys": ['ssh-ed25519 AAAA" --rootpw x']},
        "ssh_keys": {"ssh_keys": SSH_KEY},  # a string is not a list of keys
        "mac": {"mac": "not-a-mac"},
    }
    for field, change in cases.items():
        body = {"mac": MAC, "hostname": "node1", "role": "worker", "disk": "/dev/sda", **change}
        r = await bastion.client.post("/api/install", json=body, headers=bastion.admin)
        assert r.status_code == 400, field
        assert f"body.{field}" in " ".join(r.json()["error"]["details"]["fields"]), field
    # Nothing was stored, so the MAC still gets the discovery script.
    assert "discover.ks" in (await bastion.client.get("/dispatch", params={"mac": MAC})).text


async def test_install_conflicts(bastion: Running) -> None:
    assert (await bastion.install(MAC)).status_code == 200
    other = await bastion.install("52:54:00:00:00:99")  # same hostname node1
    assert other.status_code == 409
    _, cb = await bastion.dispatch_token(MAC)
    await bastion.progress(cb, mac=MAC, phase="post", percent=100)
    again = await bastion.install(MAC)
    assert again.status_code == 409
    assert "reprovision" in again.json()["error"]["details"]["hint"]


async def test_progress_unknown_mac_is_404_and_wrong_token_401(bastion: Running) -> None:
    r = await bastion.progress("whatever", mac="52:54:00:99:99:99", phase="pre")
    assert r.status_code == 404
    await bastion.install(MAC)
    _, cb = await bastion.dispatch_token(MAC)
    assert (await bastion.progress("wrong", mac=MAC, phase="pre")).status_code == 401
    assert (await bastion.progress(cb, mac=MAC, phase="lunch")).status_code == 400
    assert (await bastion.progress(cb, mac=MAC, phase="pre", percent=101)).status_code == 400
    r = await bastion.progress(cb, mac=MAC, phase="partition", percent=5, message="$(reboot)")
    assert r.json() == {"mac": MAC, "state": "installing", "phase": "partition"}
    shown = (await bastion.client.get(f"/api/machines/{MAC}", headers=bastion.admin)).json()
    assert shown["message"] == "_(reboot)"
    assert shown["settings"]["percent"] == 5


async def test_missed_callback_then_enrolment_is_enrolled_not_failed(bastion: Running) -> None:
    await bastion.install(MAC, hostname="web-1")
    _, cb = await bastion.dispatch_token(MAC)
    await bastion.progress(cb, mac=MAC, phase="packages", percent=50)
    # The post callback never arrives; labd reports the agent's enrolment by hostname.
    r = await bastion.client.post(
        "/api/enrolled", json={"hostname": "web-1"}, headers=bastion.admin
    )
    assert r.status_code == 200
    assert r.json()["state"] == "enrolled" and r.json()["phase"] == "enrolled"
    r = await bastion.client.post("/api/enrolled", json={"hostname": "nope"}, headers=bastion.admin)
    assert r.status_code == 404
    r = await bastion.client.post("/api/enrolled", json={"mac": MAC})
    assert r.status_code == 401


async def test_reprovision_dry_run_changes_nothing(bastion: Running) -> None:
    await bastion.install(MAC, role="infra")
    _, cb = await bastion.dispatch_token(MAC)
    await bastion.progress(cb, mac=MAC, phase="post", percent=100)
    r = await bastion.client.post(
        "/api/reprovision", json={"mac": MAC, "dry_run": True}, headers=bastion.admin
    )
    plan = r.json()["plan"]
    assert plan["keep"] == ["/home", "/srv", "/var/lib/rancher"]
    assert plan["format"] == ["/boot", "/", "/var"]
    assert r.json()["machine"]["state"] == "installed"
    r = await bastion.client.post("/api/reprovision", json={"mac": MAC}, headers=bastion.admin)
    assert r.json()["machine"]["state"] == "queued"
    assert r.json()["machine"]["settings"]["reprovision"] is True
    r = await bastion.client.post(
        "/api/reprovision", json={"mac": "52:54:00:00:00:01"}, headers=bastion.admin
    )
    assert r.status_code == 404


async def test_forget(bastion: Running) -> None:
    await _discover(bastion)
    r = await bastion.client.delete(f"/api/machines/{MAC.upper()}", headers=bastion.admin)
    assert r.status_code == 204
    r = await bastion.client.get(f"/api/machines/{MAC}", headers=bastion.admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_kickstarts_need_their_tokens(bastion: Running) -> None:
    token = await bastion.discovery_token()
    r = await bastion.client.get("/kickstart/discover.ks", params={"mac": MAC, "token": token})
    assert r.status_code == 200 and f'MAC = "{MAC}"' in r.text
    r = await bastion.client.get("/kickstart/discover.ks", params={"mac": MAC, "token": "x"})
    assert r.status_code == 401
    await bastion.install(MAC, ssh_keys=[SSH_KEY])
    _, cb = await bastion.dispatch_token(MAC)
    r = await bastion.client.get("/kickstart/install.ks", params={"mac": MAC, "token": cb})
    assert r.status_code == 200
    assert f'sshkey --username=root "{SSH_KEY}"' in r.text
    assert "Agent enrolment skipped: this bastion has no labd configured" in r.text
    assert "lab-agent.service" not in r.text.split("Agent enrolment skipped")[0].split("%post")[1]
    r = await bastion.client.get("/kickstart/install.ks", params={"mac": MAC, "token": "x"})
    assert r.status_code == 401


class FakeLabd:
    def __init__(self) -> None:
        self.calls: list[tuple[TokenBinding, timedelta]] = []
        self.revoked: list[str] = []

    async def create_agent_token(self, binding: TokenBinding, ttl: timedelta) -> AgentToken:
        self.calls.append((binding, ttl))
        n = len(self.calls)
        return AgentToken(token=f"jt-{binding.hostname}-{n}", id=f"id{n}")

    async def revoke_agent_token(self, token_id: str) -> None:
        self.revoked.append(token_id)


async def test_labd_joined_install_embeds_a_one_time_join_token(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    labd = FakeLabd()
    async for b in start_bastion(
        nursery, tmp_path, join_tokens=labd, labd_url="https://labd.lab:8443"
    ):
        await b.install(MAC, hostname="w7")
        _, cb = await b.dispatch_token(MAC)
        ks = (await b.client.get("/kickstart/install.ks", params={"mac": MAC, "token": cb})).text
        assert labd.calls == [(TokenBinding(hostname="w7"), timedelta(hours=2))]
        assert "token: jt-w7-1\n" in ks
        assert "server: https://labd.lab:8443\n" in ks
        assert "systemctl enable lab-agent.service" in ks
        assert '--find-links "$LAB_BASE/wheelhouse/" labctl' in ks
        assert f'LAB_BASE="{b.url}"' in ks


async def test_wheelhouse_is_served_for_pip(bastion: Running) -> None:
    wh = bastion.data_dir / "wheelhouse"
    wh.mkdir()
    (wh / "labctl-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04wheel")
    index = await bastion.client.get("/wheelhouse/")
    assert '<a href="labctl-0.1.0-py3-none-any.whl">' in index.text
    r = await bastion.client.get("/wheelhouse/labctl-0.1.0-py3-none-any.whl")
    assert r.content == b"PK\x03\x04wheel"
    assert (await bastion.client.get("/wheelhouse/..%2Fadmin-token")).status_code == 404


async def test_long_poll_returns_on_change(bastion: Running) -> None:
    first = (await bastion.client.get("/api/machines", headers=bastion.admin)).json()
    got: list[dict[str, object]] = []

    async def poll() -> None:
        r = await bastion.client.get(
            "/api/machines", params={"wait_after": first["version"]}, headers=bastion.admin
        )
        got.append(r.json())

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            await _discover(bastion)
    assert got[0]["version"] > first["version"]  # type: ignore[operator]
    assert [m["mac"] for m in got[0]["items"]] == [MAC]  # type: ignore[union-attr, index]


async def test_watchdog_fails_the_stalled_phase(tmp_path: Path) -> None:
    clock = [datetime(2026, 11, 1, 12, 0, tzinfo=UTC)]
    async with open_store(f"sqlite:///{tmp_path / 'b.db'}") as store:
        b = Bastion(
            store.machines,
            store.settings,
            Templates(base_url="http://10.0.0.1:8080", repo="http://m.test/os"),
            timeouts={"boot": 60, "packages": 600},
            clock=lambda: clock[0],
        )
        await b.start()
        await b.install({"mac": MAC, "hostname": "n1", "role": "worker"})
        script = await b.dispatch(MAC)
        token = script.split("token=")[1].split()[0]
        clock[0] += timedelta(seconds=59)
        assert await b.fail_stalled() == []
        await b.progress({"mac": MAC, "phase": "packages", "percent": 10}, token)
        clock[0] += timedelta(seconds=599)
        assert await b.fail_stalled() == []
        clock[0] += timedelta(seconds=2)
        [failed] = await b.fail_stalled()
        assert failed.state is MachineState.FAILED and failed.phase == "packages"
        assert "no progress for 600 s in phase packages" in failed.message
        assert "FAILED in phase packages" in await b.dispatch(MAC)
        # The install was slow, not dead: its next callback revives it.
        revived = await b.progress({"mac": MAC, "phase": "post", "percent": 100}, token)
        assert revived.state is MachineState.INSTALLED


async def test_watchdog_task_runs_in_the_server(nursery: trio.Nursery, tmp_path: Path) -> None:
    async for b in start_bastion(nursery, tmp_path, timeout_boot=0.2, watchdog_interval=0.05):
        await b.install(MAC)
        await b.dispatch_token(MAC)
        version = (await b.client.get("/api/machines", headers=b.admin)).json()["version"]
        with trio.fail_after(10):
            while True:
                r = await b.client.get(
                    "/api/machines", params={"wait_after": version}, headers=b.admin
                )
                version = r.json()["version"]
                if r.json()["items"][0]["state"] == "failed":
                    break
        assert r.json()["items"][0]["phase"] == "boot"
