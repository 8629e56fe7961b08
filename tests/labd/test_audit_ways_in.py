"""The audit log's two ways in: the request hooks (REST, and refused WebSocket handshakes,
both from the answered error as a value) and explicit entries for streams and agent events.
A route marked ``created`` answers 201 and its entry, committed with the change, says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected

from lab.agent.daemon import connect
from lab.labd.api.answers import created, success_status
from lab.proto.messages import Welcome
from tests.hub.hubtools import agent_creds, enroll_state, labd_with_hub, raw_agent, say_hello
from tests.labd.harness import Credentials, RunningLabd, running_labd


async def refused(labd: RunningLabd, creds: Credentials | None) -> int:
    """The status labd refuses a WebSocket handshake to /ws/agent with."""
    context = labd.ssl_context(creds, alpn=["http/1.1"])
    with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True) as rejected:
        async with trio.open_nursery() as dialer:
            await connect(dialer, labd.host, labd.port, context, connect_timeout=5)
    refusal = rejected.value.exceptions[0]
    assert isinstance(refusal, ConnectionRejected)
    return int(refusal.status_code)


async def audit_items(labd: RunningLabd, admin: Credentials, **params: Any) -> list[dict[str, Any]]:
    async with labd.client(admin) as http:
        resp = await http.get("/api/audit", params={"limit": 500, **params})
        assert resp.status_code == 200, resp.text
        items: list[dict[str, Any]] = resp.json()["items"]
        return items


async def test_refused_handshakes_are_audited_once_with_the_raised_error(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with labd_with_hub(tmp_path) as labd:
            running = labd.running
            admin = await running.admin()
            for _ in range(3):  # repeats of one identity and reason: one entry an hour
                assert await refused(running, admin) == 403
            assert await refused(running, None) == 401
            entries = [
                e
                for e in await audit_items(running, admin)
                if e["details"].get("path") == "/ws/agent"
            ]
            rows = [(e["user"], e["action"], e["resource"], e["result"]) for e in entries]
            assert sorted(rows) == [
                ("", "api:agent_ws.agent_socket", "*", "denied"),
                ("user/admin", "api:agent_ws.agent_socket", "*", "denied"),
            ]
            by_user = {e["user"]: e for e in entries}
            assert by_user["user/admin"]["details"] == {
                "path": "/ws/agent",
                "status": 403,
                "error": "permission_denied",
                "message": "a user certificate cannot use this route",
                "reason": "wrong_profile",
            }
            assert by_user[""]["details"] == {
                "path": "/ws/agent",
                "status": 401,
                "error": "unauthenticated",
                "message": "a client certificate is required",
                "reason": "no_certificate",
            }
            assert all(e["source"] == "127.0.0.1" and e["duration_ms"] > 0 for e in entries)


async def test_an_accepted_agent_leaves_no_handshake_entry(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with labd_with_hub(tmp_path) as labd:
            running = labd.running
            admin = await running.admin()
            await enroll_state(running, admin, "web1", tmp_path / "a1")
            async with raw_agent(running, agent_creds(tmp_path / "a1", "web1")) as ws:
                assert isinstance(await say_hello(ws), Welcome)
            entries = await audit_items(running, admin, user="server/web1")
            assert not [e for e in entries if e["details"].get("path") == "/ws/agent"]


async def test_a_created_answer_commits_one_entry_with_201(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                made = await http.post("/api/tokens", json={"kind": "agent"})
                assert made.status_code == 201, made.text
                role = await http.post("/api/roles", json={"name": "ops", "permissions": []})
                assert role.status_code == 201, role.text
            entries = await audit_items(labd, admin, user="user/admin")
            created_ = [e for e in entries if e["action"] in ("tokens:create", "roles:create")]
            # One entry each, committed with the change: no follow-up saying "status 200 ≠ 201".
            assert sorted((e["action"], e["details"]["status"]) for e in created_) == [
                ("roles:create", 201),
                ("tokens:create", 201),
            ]
            assert not [e for e in created_ if "follows" in e["details"]]


async def test_created_marks_the_view_and_answers_201() -> None:
    async def view(name: str) -> dict[str, str]:
        return {"name": name}

    marked = created(view)
    assert await marked("x") == ({"name": "x"}, 201)
    assert success_status(marked) == 201
    assert success_status(view) == 200
    assert success_status(None) == 200
