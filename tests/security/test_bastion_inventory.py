"""The bastion's discovery inventory: it cannot be overwritten once a machine is queued, and
what it carries cannot forge or colour the bastion's log."""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.bastion.conftest import INVENTORY, Running, start_bastion
from tests.e2e.daemons import clean_env, port_of, start_daemon

MAC = "52:54:00:12:34:56"
FORGED = "2026-01-01 00:00:00,000 INFO lab.bastion: 52:54:00:66:66:66: enrolled by the operator"


@pytest.fixture
async def bastion(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in start_bastion(nursery, tmp_path):
        yield running


def inventory(**system: str) -> dict[str, Any]:
    body = copy.deepcopy(INVENTORY)
    body["system"].update(system)
    return body


async def post_inventory(bastion: Running, body: dict[str, Any]) -> httpx.Response:
    token = await bastion.discovery_token()
    return await bastion.client.post(
        "/api/discover", json=body, headers={"Authorization": f"Bearer {token}"}
    )


@pytest.mark.parametrize("state", ["queued", "installing"])
async def test_discover_cannot_overwrite_a_queued_or_installing_machine(
    bastion: Running, state: str
) -> None:
    with trio.fail_after(30):
        genuine = inventory(serial="GENUINE", uuid="4c4c4544-0000-1111-2222-333344445555")
        assert (await post_inventory(bastion, genuine)).status_code == 200
        # A refresh while still only discovered is fine.
        assert (await post_inventory(bastion, genuine)).status_code == 200
        assert (await bastion.install(MAC)).status_code == 200
        if state == "installing":
            await bastion.dispatch_token(MAC)

        forged = inventory(serial="ATTACKER", uuid="00000000-0000-0000-0000-000000000000")
        resp = await post_inventory(bastion, forged)
        assert resp.status_code == 409, resp.text
        assert resp.json()["error"]["details"]["state"] == state

        stored = (await bastion.client.get(f"/api/machines/{MAC}", headers=bastion.admin)).json()
        assert stored["state"] == state
        assert stored["inventory"]["system"]["serial"] == "GENUINE"
        assert stored["inventory"]["system"]["uuid"] == "4c4c4544-0000-1111-2222-333344445555"


async def test_discover_refuses_control_characters_naming_the_field(bastion: Running) -> None:
    with trio.fail_after(30):
        for field, value in (("vendor", "QEMU\n" + FORGED), ("product", "PC\x1b[2J\x1b[31m")):
            resp = await post_inventory(bastion, inventory(**{field: value}))
            assert resp.status_code == 400, resp.text
            fields = resp.json()["error"]["details"]["fields"]
            assert any(f"body.system.{field}" in f for f in fields)
        body = copy.deepcopy(INVENTORY)
        body["disks"][0]["model"] = "disk\r\x07"
        resp = await post_inventory(bastion, body)
        assert resp.status_code == 400
        assert "body.disks[0].model" in resp.json()["error"]["details"]["fields"][0]
        resp = await bastion.client.get(f"/api/machines/{MAC}", headers=bastion.admin)
        assert resp.status_code == 404  # nothing was stored


async def test_a_real_bastion_log_has_no_forged_line_and_no_escape(tmp_path: Path) -> None:
    """lab-bastion as a process: inventory text cannot add a line to its log or colour it."""
    env = clean_env(
        LAB_BASTION_DATA_DIR=str(tmp_path / "data"),
        LAB_BASTION_PORT="0",
        LAB_BASTION_HOST="127.0.0.1",
        LAB_BASTION_CONFIG=str(tmp_path / "absent.yaml"),
    )
    argv = [sys.executable, "-m", "lab.bastion.main", "--no-dhcp"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            daemon, status = await start_daemon(nursery, "bastion", argv, env, tmp_path)
            try:
                url = f"http://127.0.0.1:{port_of(status)}"
                async with httpx.AsyncClient(base_url=url) as http:
                    script = (await http.get("/dispatch", params={"mac": MAC})).text
                    token = script.split("token=")[1].split()[0]
                    auth = {"Authorization": f"Bearer {token}"}
                    for system in (
                        {"vendor": "QEMU\n" + FORGED},
                        {"product": "PC\x1b]0;owned\x07\x1b[2J"},
                    ):
                        await http.post("/api/discover", json=inventory(**system), headers=auth)
                    # A clean one is logged, so the log is known to hold the discovery lines.
                    ok = await http.post("/api/discover", json=inventory(), headers=auth)
                    assert ok.status_code == 200, ok.text
            finally:
                await daemon.stop()
    text = daemon.log.read_bytes()
    assert b"discovered 52:54:00:12:34:56" in text
    assert not any(line.startswith(FORGED.encode()) for line in text.splitlines())
    assert b"\x1b" not in text and b"\x07" not in text


async def test_bastion_log_records_leave_with_control_characters_escaped(
    bastion: Running,
) -> None:
    """What the bastion logs from elsewhere (dnsmasq's forwarded lines name DHCP clients)."""
    logger = logging.getLogger("lab.bastion.dnsmasq")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("%s", "DHCPREQUEST(eth0) host\x1b[31mred\n" + FORGED)
    finally:
        logger.setLevel(level)
    with trio.fail_after(20):
        resp = await bastion.client.get("/api/logs", headers=bastion.admin)
    entries = [json.loads(line) for line in resp.text.splitlines()]
    [entry] = [e for e in entries if e["logger"] == "lab.bastion.dnsmasq"]
    assert entry["message"] == "DHCPREQUEST(eth0) host\\x1b[31mred\\n" + FORGED
