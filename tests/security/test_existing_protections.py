"""Protections that held when labctl was attacked, kept from regressing: the mTLS rejection
matrix, revocation that ends live sessions within 5 s, and enrollment rate limits. Real labd
on loopback with real TLS."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from lab import pki
from lab.agent.daemon import connect as agent_connect
from lab.proto import decode, encode
from lab.proto.errors import CloseCode
from lab.proto.messages import Hello, Welcome
from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.security.procs import metric_value


def _foreign() -> Credentials:
    other = pki.create_ca("someone else")
    key = pki.generate_key()
    cert, _ = pki.issue_user_cert(other, pki.make_csr(key, "x"), "admin")
    return Credentials(key_pem=key, cert_pem=cert, subject="user/admin")


async def _status(labd: RunningLabd, creds: Credentials | None, path: str) -> tuple[int, str]:
    try:
        async with labd.client(creds) as http:
            resp = await http.get(path)
    except httpx.TransportError:
        return 0, "tls_refused"  # the handshake itself failed
    if resp.status_code < 400:
        return resp.status_code, ""
    return resp.status_code, str(resp.json()["error"]["details"].get("reason", ""))


async def _agent_channel_status(labd: RunningLabd, creds: Credentials) -> int:
    """The HTTP status labd refuses the /ws/agent upgrade with (0: it was accepted)."""
    try:
        async with trio.open_nursery() as nursery:
            ws, stream = await agent_connect(
                nursery,
                labd.host,
                labd.port,
                labd.ssl_context(creds, alpn=["http/1.1"]),
                connect_timeout=10,
            )
            await ws.aclose()
            await trio.aclose_forcefully(stream)
    except (trio_websocket.ConnectionRejected, BaseExceptionGroup) as exc:
        rejected = exc
        while isinstance(rejected, BaseExceptionGroup):
            rejected = rejected.exceptions[0]
        assert isinstance(rejected, trio_websocket.ConnectionRejected), exc
        return int(rejected.status_code)
    return 0


async def test_mtls_rejection_matrix(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            agent = await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            viewer = await labd.enroll_user(
                "bob", await labd.create_token(admin, "user", user="bob", roles=["viewer"])
            )
            # No certificate: the admin API refuses.
            assert await _status(labd, None, "/api/tokens") == (401, "no_certificate")
            # Another CA's certificate: refused in the TLS handshake, and counted.
            assert await _status(labd, _foreign(), "/api/tokens") == (0, "tls_refused")
            async with labd.client(admin) as http:
                scrape = (await http.get("/metrics")).text
            failures = metric_value(scrape, "labd_tls_handshake_failures_total", 'reason="error"')
            assert failures >= 1
            # An agent certificate on the admin API: wrong profile.
            assert await _status(labd, agent, "/api/tokens") == (403, "wrong_profile")
            assert (await _status(labd, admin, "/api/tokens"))[0] == 200
            # A user certificate on the agent channel: refused before the WebSocket opens.
            for creds in (viewer, admin):
                assert await _agent_channel_status(labd, creds) == 403
            # Public routes need no certificate.
            for path in ("/healthz", "/api/ca", "/api/crl"):
                assert (await _status(labd, None, path))[0] == 200


async def test_revocation_ends_a_live_agent_session_within_5_s(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            agent = await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
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
                    async with labd.client(admin) as http:
                        resp = await http.post("/api/certs/revoke", json={"target": "server/node1"})
                    assert resp.status_code == 200, resp.text
                    with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as end:
                        while True:
                            await ws.get_message()
                    assert end.value.reason is not None
                    assert end.value.reason.code == CloseCode.REVOKED
                finally:
                    await trio.aclose_forcefully(stream)
            # And the revoked certificate no longer opens anything.
            assert await _status(labd, agent, "/api/auth/whoami") in (
                (401, "revoked"),
                (0, "tls_refused"),
            )


async def test_enrollment_is_rate_limited_per_address(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path, enroll_rate=3.0) as labd, labd.client() as http:
            codes = []
            for path, body in (
                ("/api/auth/enroll", {"token": "a.b", "csr": "x", "hostname": "h"}),
                ("/api/auth/user-enroll", {"token": "a.b", "csr": "x", "username": "u"}),
                ("/api/auth/enroll", {"token": "a.b", "csr": "x", "hostname": "h"}),
                ("/api/auth/user-enroll", {"token": "a.b", "csr": "x", "username": "u"}),
            ):
                resp = await http.post(path, json=body)
                codes.append(resp.status_code)
            # Three bad enrollments are refused on their merits, the fourth by the limit.
            assert 429 not in codes[:3] and codes[3] == 429, codes
            assert int(resp.headers["Retry-After"]) >= 1
