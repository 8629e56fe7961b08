"""Case 7 (labd and CLI side): text that agents, users and LAN clients control never forges a
log line nor reaches a terminal as control characters; agent facts are bounded data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from lab import pki
from lab.agent.daemon import connect as agent_connect
from lab.proto import decode, encode
from lab.proto.messages import Error, Hello, Welcome
from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.security.procs import LabdProcess, running_labd_process
from tests.servers.cli import labctl, login_env

ESC = "\x1b"
FORGED = "ok\n2026-01-01 00:00:00,000 INFO labd: user/admin granted admin to user/eve"
SCREEN = f"{ESC}[2J{ESC}]0;owned\x07"


async def _enroll_agent(
    labd: RunningLabd, admin: Credentials, name: str, facts: dict[str, Any]
) -> tuple[int, Any]:
    """(201, the agent's credentials) or (status, the error body)."""
    token = await labd.create_token(admin, "agent")
    key = pki.generate_key()
    async with labd.client() as http:
        resp = await http.post(
            "/api/auth/enroll",
            json={
                "token": token,
                "csr": pki.make_csr(key, "x").decode(),
                "hostname": name,
                "facts": facts,
            },
        )
    body = resp.json()
    if resp.status_code != 201:
        return resp.status_code, body
    creds = Credentials(
        key_pem=key, cert_pem=body["certificate"].encode(), subject=f"server/{name}"
    )
    return resp.status_code, creds


async def _token(labd: LabdProcess, admin: Credentials) -> str:
    async with labd.client(admin) as http:
        resp = await http.post("/api/tokens", json={"kind": "agent"})
    assert resp.status_code == 201, resp.text
    token: str = resp.json()["token"]
    return token


async def test_labd_log_lines_escape_control_characters_from_agents(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_labd_process(tmp_path) as labd:
            admin = await labd.admin()
            key = pki.generate_key()
            async with labd.client() as http:
                resp = await http.post(
                    "/api/auth/enroll",
                    json={
                        "token": await _token(labd, admin),
                        "csr": pki.make_csr(key, "x").decode(),
                        "hostname": "node1",
                    },
                )
            assert resp.status_code == 201, resp.text
            agent = Credentials(
                key_pem=key, cert_pem=resp.json()["certificate"].encode(), subject="server/node1"
            )
            async with trio.open_nursery() as nursery:
                ws, stream = await agent_connect(
                    nursery,
                    labd.host,
                    labd.port,
                    labd.ssl_context(agent, alpn=["http/1.1"]),
                    connect_timeout=10,
                )
                try:
                    await ws.send_message(encode(Hello(version="1.0")))
                    assert isinstance(decode(await ws.get_message()), Welcome)
                    # The agent's own words go to labd's log ("agent ... reports: ...").
                    await ws.send_message(encode(Error(code="x", message=FORGED + SCREEN)))
                    await ws.aclose()
                finally:
                    await trio.aclose_forcefully(stream)
        log = labd.log_text()
    assert "reports: ok\\n2026-01-01" in log, log[-2000:]
    assert "\n2026-01-01 00:00:00,000 INFO labd: user/admin granted" not in log
    assert ESC not in log and "\x07" not in log
    assert "\\x1b[2J" in log


async def test_describe_and_get_print_agent_text_escaped(tmp_path: Path) -> None:
    facts = {"os": f"Linux{SCREEN}", "motd": FORGED, "kernel": "6.1"}
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            status, _ = await _enroll_agent(labd, admin, "node1", facts)
            assert status == 201
            env = login_env(labd, admin, tmp_path / "home")
            done = await labctl(env, "describe", "server/node1")
            assert done.returncode == 0, done.stderr
            assert ESC not in done.stdout and "\x07" not in done.stdout
            assert "Linux\\x1b[2J\\x1b]0;owned\\x07" in done.stdout
            assert "motd: ok\\n2026-01-01" in done.stdout
            assert not any(line.startswith("2026-01-01") for line in done.stdout.splitlines())
            # Data formats keep the value itself (JSON escapes it by construction).
            done = await labctl(env, "describe", "server/node1", "-o", "json")
            assert json.loads(done.stdout)["facts"]["os"] == f"Linux{SCREEN}"
            assert ESC not in done.stdout
            done = await labctl(env, "get", "servers", "-o", "wide")
            assert done.returncode == 0, done.stderr
            assert ESC not in done.stdout


async def test_oversized_or_odd_facts_are_refused_with_a_reason(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            blob = {"blob": "x" * 900_000}
            status, body = await _enroll_agent(labd, admin, "node1", blob)
            assert status == 400
            assert any(
                "body.facts" in f and "over the limit" in f
                for f in body["error"]["details"]["fields"]
            ), body
            deep: dict[str, Any] = {}
            cursor = deep
            for _ in range(12):
                cursor["n"] = {}
                cursor = cursor["n"]
            status, body = await _enroll_agent(labd, admin, "node2", deep)
            assert status == 400 and "deeper" in json.dumps(body), body
            status, body = await _enroll_agent(labd, admin, "node3", {"a\nb": 1})
            assert status == 400 and "fact name" in json.dumps(body), body
            status, agent = await _enroll_agent(labd, admin, "node4", {"kernel": "6.1"})
            assert status == 201
            # The same bounds hold for the facts of each hello.
            async with trio.open_nursery() as nursery:
                ws, stream = await agent_connect(
                    nursery,
                    labd.host,
                    labd.port,
                    labd.ssl_context(agent, alpn=["http/1.1"]),
                    connect_timeout=10,
                )
                try:
                    await ws.send_message(encode(Hello(version="1.0", facts=blob)))
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason is not None
                    assert closed.value.reason.code == 1002
                finally:
                    await trio.aclose_forcefully(stream)
            async with labd.client(admin) as http:
                server = (await http.get("/api/servers/node4")).json()
            assert server["facts"].get("blob") is None
            assert server["facts"]["kernel"] == "6.1"
