"""Case 6: odd input gets a 400 that names the field and the reason, and the refusal is audited;
never a 500, a 503 or a stream that ends with nothing. Real labd (and bastion) on loopback TLS."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio

from lab import pki
from lab.client.wsclient import StreamSession, connect
from lab.errors import LabError
from tests.bastion.conftest import Running, start_bastion
from tests.labd.harness import Credentials, RunningLabd, running_labd

DEEP = "[" * 300_000 + "]" * 300_000


async def _audit(labd: RunningLabd, admin: Credentials, action: str) -> list[dict[str, Any]]:
    async with labd.client(admin) as http:
        resp = await http.get("/api/audit", params={"action": action, "limit": 1000})
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


async def _post(http: httpx.AsyncClient, path: str, body: Any, **kw: Any) -> httpx.Response:
    """POST ``body`` as JSON with non-ASCII escaped (httpx would refuse to encode a surrogate)."""
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return await http.post(path, content=json.dumps(body), headers=headers, **kw)


async def _patch(http: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    return await http.patch(path, content=json.dumps(body), headers=headers)


def _invalid(resp: httpx.Response, field: str, reason: str | None = None) -> dict[str, Any]:
    assert resp.status_code == 400, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == "invalid"
    assert any(field in f for f in error["details"]["fields"]), error
    if reason is not None:
        assert error["details"].get("reason") == reason, error
    return error


async def test_deep_json_is_a_400_naming_the_limit_and_audited(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            headers = {"Content-Type": "application/json"}
            async with labd.client() as http:
                resp = await http.post("/api/auth/enroll", content=DEEP, headers=headers)
            _invalid(resp, "body", "too_deep")
            async with labd.client(admin) as http:
                resp = await http.post("/api/tokens", content=DEEP, headers=headers)
                assert "32" in _invalid(resp, "body", "too_deep")["message"]
                resp = await http.post("/api/audit/verify", content=DEEP, headers=headers)
                _invalid(resp, "body", "too_deep")
                # Inside the limit, the same route still works.
                ok = await _post(http, "/api/tokens", {"kind": "agent"})
                assert ok.status_code == 201, ok.text
            created = await _audit(labd, admin, "tokens:create")
            refused = [e for e in created if e["result"] != "success"]
            assert [e["details"]["status"] for e in refused] == [400]
            # The entry keeps the error the client was answered with: code, message, reason.
            (entry,) = refused
            assert entry["details"]["error"] == "invalid", entry
            assert entry["details"]["reason"] == "too_deep", entry
            assert "32" in entry["details"]["message"], entry
            assert [e["details"]["status"] for e in await _audit(labd, admin, "auth:enroll")] == [
                400
            ]


async def test_lone_surrogates_and_control_characters_in_names_are_400_and_audited(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await _post(http, "/api/tokens", {"kind": "agent", "description": "\ud800"})
                _invalid(resp, "body.description", "surrogate")
                resp = await _post(http, "/api/roles", {"name": "\ud800"})
                _invalid(resp, "body.name", "surrogate")
                resp = await _post(http, "/api/roles", {"name": "ops\x1b[31m"})
                _invalid(resp, "body.name")
                resp = await _post(
                    http, "/api/roles", {"name": "ops", "description": "line\nforged"}
                )
                _invalid(resp, "body.description")
                resp = await _post(http, "/api/users", {"name": "eve\r\nroot", "roles": []})
                _invalid(resp, "body.name")
                resp = await _post(http, "/api/tokens", {"kind": "user", "roles": ["a\x00"]})
                _invalid(resp, "body.roles")
            # A user enrollment with a surrogate name: 400 (not 503), and audited.
            key = pki.generate_key()
            async with labd.client() as http:
                resp = await _post(
                    http,
                    "/api/auth/user-enroll",
                    {
                        "token": "x" * 20,
                        "csr": pki.make_csr(key, "x").decode(),
                        "username": "\ud800",
                    },
                )
            _invalid(resp, "body.username", "surrogate")
            enrolls = await _audit(labd, admin, "auth:user-enroll")
            statuses = [e["details"]["status"] for e in enrolls]
            assert 400 in statuses
            token_refusals = [
                e for e in await _audit(labd, admin, "tokens:create") if e["result"] != "success"
            ]
            assert len(token_refusals) == 2
            assert all(e["details"]["status"] == 400 for e in token_refusals)
            roles = [e for e in await _audit(labd, admin, "roles:create")]
            assert [e["details"]["status"] for e in roles] == [400, 400, 400]


async def test_label_values_with_control_characters_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent")
            await labd.enroll_agent("node1", token)
            async with labd.client(admin) as http:
                resp = await _patch(
                    http, "/api/servers/node1/labels", {"set": {"role": "web\x1b]0;pwned\x07"}}
                )
                _invalid(resp, "body.set")
                resp = await http.patch("/api/servers/node1/labels", json={"set": {"ok": "yes"}})
                assert resp.status_code == 200, resp.text


async def test_exec_argv_with_a_surrogate_gets_an_error_and_an_audit_entry(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            ctx = labd.ssl_context(admin, alpn=["http/1.1"])
            async with connect(labd.url, "/ws/exec", ctx) as ws:
                session = StreamSession(ws)
                with pytest.raises(LabError) as info:
                    await session.open(
                        "exec", {"targets": ["node1"], "start": {"argv": ["echo", "\ud800"]}}
                    )
            assert info.value.status == 400
            assert "argv" in str(info.value.details), info.value.details
            entries = await _audit(labd, admin, "servers:exec")
            assert entries and entries[-1]["result"] == "error", entries


async def test_deep_json_on_websocket_messages_closes_that_connection_only(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            ctx = labd.ssl_context(admin, alpn=["http/1.1"])
            deep = (
                '{"type":"request","v":1,"request_id":"1","method":"exec","params":'
                + ("[" * 5000 + "]" * 5000)
                + "}"
            )
            async with connect(labd.url, "/ws/exec", ctx) as ws:
                await ws.send_message(deep)
                with pytest.raises(Exception) as closed:
                    await ws.get_message()
                assert ws.closed is not None and ws.closed.code == 1002, closed.value
            async with labd.client(admin) as http:
                assert (await http.get("/healthz")).status_code == 200


async def test_bastion_json_routes_refuse_deep_json_and_surrogates(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(120):
        gen = cast(AsyncGenerator[Running, None], start_bastion(nursery, tmp_path))
        async with aclosing(gen) as running:
            async for bastion in running:
                await _bastion_checks(bastion)
                break


async def _bastion_checks(bastion: Running) -> None:
    headers = {**bastion.admin, "Content-Type": "application/json"}
    resp = await bastion.client.post("/api/install", content="[" * 100_000, headers=headers)
    _invalid(resp, "body", "too_deep")
    resp = await _post(
        bastion.client,
        "/api/install",
        {"mac": "52:54:00:00:00:09", "hostname": "\ud800", "role": "worker"},
        headers=bastion.admin,
    )
    assert resp.status_code == 400, resp.text
