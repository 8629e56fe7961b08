"""Case 4: no client can hold labd or the bastion open (idle and keep-alive timeouts, a
per-address cap on unauthenticated connections, close after an early error, TLS refusals
counted and logged at a bounded rate). Real daemons as subprocesses, real TLS on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from lab import pki
from tests.labd.harness import Credentials
from tests.security.procs import (
    LabdProcess,
    headers_of,
    http_get,
    open_fds,
    read_response,
    running_bastion_process,
    running_labd_process,
    status_of,
    tls_connect,
    wait_eof,
)


async def _settle_fds(pid: int, at_most: int) -> int:
    """fds of ``pid`` once they dropped to ``at_most`` (the server closes a connection right
    after its client saw EOF; the close itself can trail by a scheduler tick)."""
    while (count := open_fds(pid)) > at_most:
        await trio.sleep(0.05)
    return count


async def test_labd_closes_idle_keepalive_and_silent_connections(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd_process(
            tmp_path, LABD_IDLE_TIMEOUT="2", LABD_MAX_UNAUTHENTICATED_PER_ADDRESS="200"
        ) as labd:
            context = labd.ssl_context(alpn=["http/1.1"])
            # Warm up (database files, logging) so the baseline holds what labd keeps open.
            warm = await tls_connect(labd.host, labd.port, context)
            assert status_of(await http_get(warm, "/healthz", connection="close")) == 200
            await wait_eof(warm)
            await warm.aclose()
            baseline = await _settle_fds(labd.pid, open_fds(labd.pid))

            streams: list[trio.abc.Stream] = []
            for i in range(50):
                stream = await tls_connect(labd.host, labd.port, context)
                if i % 2 == 0:
                    # One keep-alive request, then nothing: the connection is idle.
                    assert status_of(await http_get(stream, "/healthz")) == 200
                elif i % 5 == 1:
                    # Half a request line: never a complete request.
                    await stream.send_all(b"GET /heal")
                streams.append(stream)
            assert open_fds(labd.pid) >= baseline + 45

            # Every connection is closed by labd while the client keeps its end open.
            async with trio.open_nursery() as nursery:
                for held in streams:
                    nursery.start_soon(wait_eof, held)
            assert await _settle_fds(labd.pid, baseline + 2) <= baseline + 2
            for held in streams:
                await trio.aclose_forcefully(held)


async def test_labd_handshake_failures_are_counted_and_logged_at_a_bounded_rate(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with running_labd_process(tmp_path, LABD_HANDSHAKE_TIMEOUT="1") as labd:
            admin = await labd.admin()
            # A TCP connection that never starts TLS is dropped after the handshake timeout.
            silent = await trio.open_tcp_stream(labd.host, labd.port)
            assert await wait_eof(silent) == b""
            await silent.aclose()
            # Certificates from another CA fail the handshake.
            other = pki.create_ca("not labd")
            key = pki.generate_key()
            cert, _ = pki.issue_user_cert(other, pki.make_csr(key, "x"), "admin")
            foreign = labd.ssl_context(Credentials(key_pem=key, cert_pem=cert, subject=""))
            for _ in range(5):
                async with httpx.AsyncClient(base_url=labd.url, verify=foreign) as http:
                    try:
                        resp = await http.get("/api/tokens")
                    except httpx.TransportError:
                        continue
                    raise AssertionError(f"a foreign certificate got an answer: {resp}")
            name = "labd_tls_handshake_failures_total"
            assert await labd.metric(admin, name, 'reason="timeout"') == 1
            assert await labd.metric(admin, name, 'reason="error"') == 5
        # The log file is complete once labd has stopped.
        lines = [ln for ln in labd.log_text().splitlines() if "TLS handshake from" in ln]
        assert len(lines) == 1, lines


async def _wait_unauthenticated(labd: LabdProcess, admin: Credentials, count: int) -> None:
    """Until labd counts ``count`` unauthenticated connections (closes reach it a little after
    the client made them; while the cap is reached, the scrape itself may be refused)."""
    while True:
        try:
            held = await labd.metric(admin, "labd_unauthenticated_connections")
        except httpx.TransportError:
            held = -1
        if held == count:
            return
        await trio.sleep(0.05)


async def test_labd_caps_unauthenticated_connections_per_address(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd_process(
            tmp_path, LABD_MAX_UNAUTHENTICATED_PER_ADDRESS="5", LABD_IDLE_TIMEOUT="60"
        ) as labd:
            admin = await labd.admin()
            await _wait_unauthenticated(labd, admin, 0)
            context = labd.ssl_context(alpn=["http/1.1"])
            held = [await tls_connect(labd.host, labd.port, context) for _ in range(5)]
            assert status_of(await http_get(held[0], "/healthz")) == 200

            # The sixth is closed before its handshake completes.
            extra = trio.SSLStream(
                await trio.open_tcp_stream(labd.host, labd.port),
                context,
                server_hostname=labd.host,
            )
            try:
                await extra.do_handshake()
            except trio.BrokenResourceError:
                pass
            else:
                assert await wait_eof(extra) == b""
            await trio.aclose_forcefully(extra)

            # The first five still work; once they are gone, others get in again.
            assert status_of(await http_get(held[1], "/healthz")) == 200
            for stream in held:
                await stream.aclose()
            await _wait_unauthenticated(labd, admin, 0)
            refused = await labd.metric(
                admin, "labd_connections_refused_total", 'reason="per_address_limit"'
            )
            assert refused >= 1
        assert "refused a connection from 127.0.0.1" in labd.log_text()


async def test_labd_closes_the_connection_after_an_early_error(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd_process(tmp_path, LABD_IDLE_TIMEOUT="300") as labd:
            context = labd.ssl_context(alpn=["http/1.1"])
            for path, length, status in (
                # Over the body limit: refused before the body is read.
                (b"/api/auth/enroll", b"10000000", 413),
                # No client certificate on an admin route: refused before the body is read.
                (b"/api/tokens", b"1000", 401),
            ):
                stream = await tls_connect(labd.host, labd.port, context)
                await stream.send_all(
                    b"POST " + path + b" HTTP/1.1\r\nHost: labd\r\n"
                    b"Content-Type: application/json\r\nContent-Length: " + length + b"\r\n\r\n{"
                )
                answer = await read_response(stream)
                assert status_of(answer) == status, answer
                assert headers_of(answer).get("connection") == "close", answer
                # Closed now, not after the (long) idle timeout.
                assert await wait_eof(stream) == b""
                await trio.aclose_forcefully(stream)


async def test_bastion_closes_after_an_early_413_and_caps_per_address(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_bastion_process(
            tmp_path,
            LAB_BASTION_IDLE_TIMEOUT="300",
            LAB_BASTION_MAX_UNAUTHENTICATED_PER_ADDRESS="3",
        ) as bastion:
            stream = await trio.open_tcp_stream(bastion.host, bastion.port)
            await stream.send_all(
                b"POST /api/discover HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10000000\r\n\r\n{"
            )
            answer = await read_response(stream)
            assert status_of(answer) == 413
            assert headers_of(answer).get("connection") == "close"
            # Closed now, not after the (long) idle timeout.
            assert await wait_eof(stream) == b""
            await stream.aclose()

            # Three connections, each shown admitted by an answer. The bastion may not yet have
            # released the slot of the connection it just closed: one refused then is tried
            # again (the cap holds either way; fail_after bounds the retries).
            held: list[trio.SocketStream] = []
            while len(held) < 3:
                stream = await trio.open_tcp_stream(bastion.host, bastion.port)
                try:
                    assert status_of(await http_get(stream, "/healthz")) == 200
                except (EOFError, trio.BrokenResourceError):
                    await stream.aclose()
                    await trio.sleep(0.05)  # a pause between retries, not a synchronisation
                    continue
                held.append(stream)
            fourth = await trio.open_tcp_stream(bastion.host, bastion.port)
            assert await wait_eof(fourth) == b""
            await fourth.aclose()
            assert status_of(await http_get(held[0], "/healthz")) == 200
            for s in held:
                await s.aclose()


async def test_bastion_closes_idle_keepalive_connections(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_bastion_process(tmp_path, LAB_BASTION_IDLE_TIMEOUT="2") as bastion:
            warm = await trio.open_tcp_stream(bastion.host, bastion.port)
            assert status_of(await http_get(warm, "/healthz", connection="close")) == 200
            await wait_eof(warm)
            await warm.aclose()
            baseline = await _settle_fds(bastion.pid, open_fds(bastion.pid))
            streams = []
            for _ in range(20):
                stream = await trio.open_tcp_stream(bastion.host, bastion.port)
                # One keep-alive request (which also makes sure the bastion accepted it).
                assert status_of(await http_get(stream, "/healthz")) == 200
                streams.append(stream)
            assert open_fds(bastion.pid) >= baseline + 15
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(wait_eof, stream)
            assert await _settle_fds(bastion.pid, baseline + 2) <= baseline + 2
            for stream in streams:
                await stream.aclose()
