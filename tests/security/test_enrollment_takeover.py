"""Agent tokens enroll only what they were made for: an unbound token creates new servers only,
a bound one only its hostname and hardware, a takeover needs a --replace token and revokes the
old certificate at once, and a second live session for one name is refused, not alternated."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from lab import pki
from lab.cli.describe_cmd import render_server
from lab.proto import decode, encode
from lab.proto.messages import Hello, Ping, Pong, Welcome
from tests.hub.hubtools import labd_with_hub, raw_agent, say_hello
from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.store.pg_server import (
    PgServer,
    PgUnavailable,
    create_database,
    database_url,
    drop_database,
    running_postgres,
)


async def enroll(
    labd: RunningLabd, token: str, hostname: str, facts: dict[str, Any] | None = None
) -> tuple[httpx.Response, bytes]:
    key = pki.generate_key()
    async with labd.client() as http:
        resp = await http.post(
            "/api/auth/enroll",
            json={
                "token": token,
                "csr": pki.make_csr(key, "x").decode(),
                "hostname": hostname,
                "facts": facts or {},
            },
        )
    return resp, key


def creds_of(resp: httpx.Response, key: bytes, name: str) -> Credentials:
    assert resp.status_code == 201, resp.text
    return Credentials(
        key_pem=key, cert_pem=resp.json()["certificate"].encode(), subject=f"server/{name}"
    )


async def token_uses(labd: RunningLabd, admin: Credentials, token: str) -> int:
    async with labd.client(admin) as http:
        items = (await http.get("/api/tokens")).json()["items"]
    [found] = [t for t in items if token.startswith(t["id"] + ".")]
    uses: int = found["uses"]
    return uses


async def test_an_unbound_token_cannot_take_over_an_existing_server(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
            fresh = await labd.create_token(admin, "agent")
            taken, _ = await enroll(labd, fresh, "node1")
            assert taken.status_code == 409, taken.text
            error = taken.json()["error"]
            assert error["details"]["reason"] == "server_exists"
            assert "--replace" in error["details"]["hint"]
            assert await token_uses(labd, admin, fresh) == 0
            async with labd.client(admin) as http:
                certs = (await http.get("/api/certs", params={"subject": "server/node1"})).json()
            assert len(certs["items"]) == 1  # no second certificate for node1
            # The same token still enrolls a new server.
            ok, _ = await enroll(labd, fresh, "node2")
            assert ok.status_code == 201, ok.text


async def test_bound_tokens_enroll_only_their_host_and_hardware(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(
                admin,
                "agent",
                hostname="node3",
                system_uuid="4C4C4544-0042-3510-8051-B7C04F",
                serial="CZ1234",
            )
            other, _ = await enroll(labd, token, "node4")
            assert other.status_code == 403
            assert other.json()["error"]["details"]["reason"] == "token_host_mismatch"
            wrong_box, _ = await enroll(
                labd, token, "node3", {"system_uuid": "00000000-0000", "serial": "cz1234"}
            )
            assert wrong_box.status_code == 403
            assert wrong_box.json()["error"]["details"]["reason"] == "token_hardware_mismatch"
            no_dmi, _ = await enroll(labd, token, "node3", {})
            assert no_dmi.status_code == 403
            assert await token_uses(labd, admin, token) == 0
            right, _ = await enroll(
                labd,
                token,
                "node3",
                {"system_uuid": "4c4c4544-0042-3510-8051-b7c04f", "serial": "CZ1234 "},
            )
            assert right.status_code == 201, right.text


async def test_a_replace_token_takes_over_and_revokes_the_old_certificate(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            running = labd.running
            admin = await running.admin()
            first = await running.create_token(admin, "agent")
            old = await running.enroll_agent("node1", first)
            old_serial = pki.cert_info(old.cert_pem).serial
            async with raw_agent(running, old) as ws:
                assert isinstance(await say_hello(ws), Welcome)
                token = await running.create_token(admin, "agent", hostname="node1", replace=True)
                resp, key = await enroll(running, token, "node1")
                new = creds_of(resp, key, "node1")
                # The old agent is cut off at once (revoked in the same transaction).
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 4005
            async with running.client(old) as http:
                refused = await http.post(
                    "/api/auth/renew", json={"csr": pki.make_csr(old.key_pem, "x").decode()}
                )
            assert refused.status_code == 401
            assert refused.json()["error"]["details"]["reason"] == "revoked"
            async with raw_agent(running, new) as ws:
                assert isinstance(await say_hello(ws), Welcome)
            new_serial = pki.cert_info(new.cert_pem).serial
            async with running.client(admin) as http:
                server = (await http.get("/api/servers/node1")).json()
                audit = (await http.get("/api/audit", params={"action": "auth:enroll"})).json()
            trace = server["enrollment"]
            token_id = token.split(".", 1)[0]
            assert trace["token_id"] == token_id and trace["mode"] == "replace"
            assert trace["token_created_by"] == "user/admin"
            assert trace["binding"] == {"hostname": "node1", "replace": True}
            assert trace["replaced_serials"] == [old_serial]
            assert server["cert_serial"] == new_serial
            [entry] = [e for e in audit["items"] if e["details"].get("token_id") == token_id]
            assert entry["resource"] == "server/node1" and entry["result"] == "success"
            details = entry["details"]
            assert details["token_created_by"] == "user/admin"
            assert details["binding"] == {"hostname": "node1", "replace": True}
            assert (details["mode"], details["replaced_serials"]) == ("replace", [old_serial])
            shown = render_server(server, datetime.now(UTC))
            assert f"Join token:     {token_id} created by user/admin" in shown
            assert "Token binding:  hostname=node1, replace=True" in shown
            assert f"replaced an existing server, revoked {old_serial}" in shown
            first_entry = [
                e for e in audit["items"] if e["details"].get("token_id") == first.split(".")[0]
            ]
            assert first_entry[0]["details"]["mode"] == "new"


async def test_a_second_live_session_is_refused_not_alternated(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            running = labd.running
            admin = await running.admin()
            creds = await running.enroll_agent("node1", await running.create_token(admin, "agent"))
            async with raw_agent(running, creds) as real:
                welcome = await say_hello(real)
                assert isinstance(welcome, Welcome)
                for _ in range(3):
                    async with raw_agent(running, creds) as impostor:
                        await impostor.send_message(encode(Hello(version="x", facts={}, labels={})))
                        with pytest.raises(ConnectionClosed) as closed:
                            await impostor.get_message()
                        assert closed.value.reason is not None
                        assert closed.value.reason.code == 4006
                info = labd.hub.session("node1")
                assert info is not None and info.session_id == welcome.session_id
                await real.send_message(encode(Ping(nonce=1)))
                assert decode(await real.get_message()) == Pong(nonce=1)


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    try:
        with running_postgres() as server:
            yield server
    except PgUnavailable as exc:
        pytest.skip(f"needs PostgreSQL 15 binaries: {exc}")


async def test_a_second_session_on_another_replica_is_refused(
    tmp_path: Path, pg: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"s_{secrets.token_hex(6)}"
    create_database(pg.url(), name)
    monkeypatch.setenv("LABD_CA_PASSPHRASE", "two replicas, one CA: " + secrets.token_hex(8))
    url = database_url(pg.url(), name)
    try:
        with trio.fail_after(120):
            async with (
                labd_with_hub(tmp_path / "a", database_url=url) as a,
                labd_with_hub(tmp_path / "b", database_url=url) as b,
            ):
                admin = await a.running.admin()
                creds = await a.running.enroll_agent(
                    "node1", await a.running.create_token(admin, "agent")
                )
                async with raw_agent(a.running, creds) as real:
                    welcome = await say_hello(real)
                    assert isinstance(welcome, Welcome)
                    async with raw_agent(b.running, creds) as impostor:
                        await impostor.send_message(encode(Hello(version="x", facts={}, labels={})))
                        with pytest.raises(ConnectionClosed) as closed:
                            await impostor.get_message()
                        assert closed.value.reason is not None
                        assert closed.value.reason.code == 4006
                    assert not b.hub.is_online("node1")
                    info = a.hub.session("node1")
                    assert info is not None and info.session_id == welcome.session_id
                    await real.send_message(encode(Ping(nonce=2)))
                    assert decode(await real.get_message()) == Pong(nonce=2)
    finally:
        drop_database(pg.url(), name)
