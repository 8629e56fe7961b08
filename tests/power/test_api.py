"""labd's power routes over real TLS against the IPMI simulator and the Redfish emulator:
the driver set with a sealed password, actions, RBAC on power:ACTION, the audit entry."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import attrs
import pytest
import trio

from lab.pki import SEAL_LABEL, seal
from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.power.bmcs import PASSWORD, USER, bmc_said, ipmi_simulator, redfish_emulator
from tests.servers.seam import audit_entries

pytest.importorskip("pyghmi")
pytest.importorskip("sushy")


async def _server(labd: RunningLabd, admin: Credentials, name: str = "node1") -> None:
    token = await labd.create_token(admin, "agent")
    await labd.enroll_agent(name, token, {"os": "linux"})


def _power_rows(labd: RunningLabd) -> list[tuple[str, ...]]:
    url = labd.config.effective_database_url
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT target, driver, settings, sealed FROM power_drivers"))


@pytest.mark.skipif(shutil.which("ipmitool") is None, reason="needs ipmitool")
async def test_ipmi_through_labd_sealed_rbac_and_audited(tmp_path: Path) -> None:
    with trio.fail_after(180), ipmi_simulator() as bmc:
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await _server(labd, admin)
            settings = {"host": "127.0.0.1", "port": bmc.port, "username": USER, "deadline": 30}
            async with labd.client(admin) as http:
                resp = await http.put(
                    "/api/power/server/node1",
                    json={"driver": "ipmi", "settings": settings, "password": PASSWORD},
                )
                assert resp.status_code == 200, resp.text
                assert resp.json()["password"] is True and "s3cret" not in resp.text
                # stored in the secrets store: the database never holds the password
                (row,) = _power_rows(labd)
                assert row[0] == "server/node1" and row[1] == "ipmi"
                assert row[3] == "secrets" and PASSWORD not in json.dumps(row)
                assert labd.context is not None
                assert await labd.context.secrets.names("power/") == ["power/server/node1/password"]
                raw = b"".join(p.read_bytes() for p in labd.data_dir.glob("labd.db*"))
                assert PASSWORD.encode() not in raw

                resp = await http.get("/api/power/server/node1")
                assert resp.json() == {"target": "server/node1", "driver": "ipmi", "power": "off"}
                # A row written before the secrets store (sealed in the row) still opens.
                legacy = seal(
                    labd.context.audit_keys.chain.derive(SEAL_LABEL), "server/node1", PASSWORD
                )
                stored = await labd.context.store.power.get("server/node1")
                await labd.context.store.power.set(attrs.evolve(stored, sealed=legacy))
                await labd.context.secrets.delete("power/server/node1/password")
                resp = await http.get("/api/power/server/node1")
                assert resp.json()["power"] == "off", resp.text
                resp = await http.post("/api/power/server/node1/cycle", json={"next_boot": "pxe"})
                assert resp.status_code == 200, resp.text
                answer = resp.json()
                assert answer["power"] == "on" and answer["next_boot"] == "pxe"
                # a bad field is named; an unknown target is 404
                resp = await http.put(
                    "/api/power/server/node1", json={"driver": "ipmi", "settings": {"hots": "x"}}
                )
                assert resp.status_code == 400
                assert resp.json()["error"]["details"]["fields"] == ["body.settings.hots"]
                resp = await http.post("/api/power/server/ghost/on")
                assert resp.status_code == 404

            entries = await audit_entries(labd, "power:cycle")
            assert entries[-1].details["driver"] == "ipmi"
            assert "bootdev pxe" in entries[-1].details["answer"]
            for action in ("power:set", "power:cycle"):
                for entry in await audit_entries(labd, action):
                    assert PASSWORD not in json.dumps(entry.details)

            # a viewer may not power-cycle: 403 and nothing reaches the BMC
            token = await labd.create_token(admin, "user", user="vera", roles=["viewer"])
            vera = await labd.enroll_user("vera", token)
            async with labd.client(vera) as http:
                resp = await http.post("/api/power/server/node1/off")
                assert resp.status_code == 403, resp.text
                assert "power:off" in resp.text
        assert bmc_said(bmc) == ["bootdev network", "power on"]


async def test_redfish_wrong_password_through_labd(tmp_path: Path) -> None:
    with trio.fail_after(180), redfish_emulator(tmp_path / "bmc") as bmc:
        async with running_labd(tmp_path / "labd") as labd:
            admin = await labd.admin()
            await _server(labd, admin)
            async with labd.client(admin) as http:
                resp = await http.put(
                    "/api/power/server/node1",
                    json={
                        "driver": "redfish",
                        "settings": {"url": bmc.url, "username": USER},
                        "password": "wrong",
                    },
                )
                assert resp.status_code == 200, resp.text
                resp = await http.post("/api/power/server/node1/on", json={"next_boot": "pxe"})
                assert resp.status_code == 403, resp.text
                message = resp.json()["error"]["message"]
                assert "refused the credentials" in message and "\n" not in message
            (entry,) = await audit_entries(labd, "power:on")
            assert entry.details["driver"] == "redfish"
            assert "refused the credentials" in entry.details["answer"]
        system = bmc.system()
        assert system["PowerState"] == "Off"
        assert system["Boot"]["BootSourceOverrideTarget"] != "Pxe"  # type: ignore[index]


async def test_machine_target_by_mac_with_wol(tmp_path: Path) -> None:
    """A bastion machine is a target by the name its driver was set under; WoL to a loopback
    UDP socket of this test receives the magic packet."""
    import socket

    from lab.power.wol import magic_packet

    mac = "52:54:00:aa:bb:cc"
    with trio.fail_after(60), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await http.post(f"/api/power/machine/{mac}/on")
                assert resp.status_code == 404 and "no power driver" in resp.text
                resp = await http.put(
                    "/api/power/machine/bad%20name",
                    json={"driver": "wol", "settings": {"mac": mac}},
                )
                assert resp.status_code == 400
                resp = await http.put(
                    f"/api/power/machine/{mac}",
                    json={
                        "driver": "wol",
                        "settings": {"mac": mac, "broadcast": "127.0.0.1", "port": port},
                    },
                )
                assert resp.status_code == 200, resp.text
                resp = await http.post(f"/api/power/machine/{mac}/on")
                assert resp.status_code == 200, resp.text
                assert resp.json()["power"] == "unknown"
                resp = await http.post(f"/api/power/machine/{mac}/off")
                assert resp.status_code == 409 and "wol can only power on" in resp.text
        sink.settimeout(5)
        assert sink.recv(200) == magic_packet(mac)
