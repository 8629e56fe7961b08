"""The agent driver through labd: a real lab-agent process reboots its node by running a
stand-in systemctl; power:cycle is audited with the command's answer."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from tests.e2e.daemons import Daemon, clean_env, start_daemon
from tests.hub.hubtools import enroll_state
from tests.labd.harness import running_labd
from tests.servers.seam import audit_entries

STUB = """#!/bin/sh
echo "$@" >> "{marker}"
echo "stand-in systemctl $*"
"""


async def test_agent_driver_reboots_through_the_agent(tmp_path: Path) -> None:
    marker = tmp_path / "systemctl.calls"
    stub = tmp_path / "bin" / "systemctl"
    stub.parent.mkdir()
    stub.write_text(STUB.format(marker=marker))
    stub.chmod(0o755)
    started: list[Daemon] = []
    with trio.fail_after(180):
        async with running_labd(tmp_path / "labd") as labd, trio.open_nursery() as nursery:
            try:
                admin = await labd.admin()
                state = tmp_path / "agent"
                await enroll_state(labd, admin, "node1", state)
                async with labd.client(admin) as http:
                    resp = await http.put(
                        "/api/power/server/node1",
                        json={
                            "driver": "agent",
                            "settings": {
                                "reboot_argv": [str(stub), "reboot"],
                                "poweroff_argv": [str(stub), "poweroff"],
                            },
                        },
                    )
                    assert resp.status_code == 200, resp.text
                    # no agent connected yet: status unknown, a reboot is refused as unavailable
                    resp = await http.get("/api/power/server/node1")
                    assert resp.json()["power"] == "unknown"
                    resp = await http.post("/api/power/server/node1/cycle")
                    assert resp.status_code == 503, resp.text
                    assert "not connected" in resp.json()["error"]["message"]

                    env = clean_env(LAB_AGENT_STATE_DIR=str(state))
                    argv = [sys.executable, "-m", "lab.agent.main", "run"]
                    agent, _ = await start_daemon(nursery, "agent", argv, env, tmp_path)
                    started.append(agent)
                    while (await http.get("/api/power/server/node1")).json()["power"] != "on":
                        await trio.sleep(0.1)

                    resp = await http.post("/api/power/server/node1/cycle")
                    assert resp.status_code == 200, resp.text
                    answer = resp.json()
                    assert answer["driver"] == "agent"
                    assert "stand-in systemctl reboot" in answer["answer"]
                    resp = await http.post("/api/power/server/node1/off")
                    assert resp.status_code == 200, resp.text
                    # the agent cannot set a network boot
                    resp = await http.post(
                        "/api/power/server/node1/cycle", json={"next_boot": "pxe"}
                    )
                    assert resp.status_code == 409, resp.text
                assert marker.read_text().splitlines() == ["reboot", "poweroff"]
                entries = await audit_entries(labd, "power:cycle")
                assert any(
                    "stand-in systemctl reboot" in str(e.details.get("answer")) for e in entries
                )
            finally:
                with trio.CancelScope(shield=True):
                    for daemon in started:
                        await daemon.stop()
                nursery.cancel_scope.cancel()
