"""The /dispatch connection front: what it takes, what it hands to hypercorn, and how it ends."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.bastion.conftest import Running, start_bastion

MAC = "52:54:00:ab:cd:ef"
GET = f"GET /dispatch?mac={MAC} HTTP/1.1\r\nHost: b\r\n\r\n".encode()


# --- on a running bastion -----------------------------------------------------------------------


@pytest.fixture
async def quick(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in start_bastion(nursery, tmp_path, idle_timeout=1.0):
        yield running


async def _connect(bastion: Running) -> trio.SocketStream:
    host, port = bastion.url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.IGNORECASE)


async def _responses(stream: trio.SocketStream, count: int) -> list[tuple[int, bytes, bytes]]:
    """``count`` responses (status, head, body), read to their Content-Length."""
    buf = b""
    out: list[tuple[int, bytes, bytes]] = []
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            found = _LENGTH.search(buf[: end + 2])
            assert found is not None, buf[:end]
            size = end + 4 + int(found.group(1))
            if len(buf) >= size:
                out.append((int(buf[9:12]), buf[:end], buf[end + 4 : size]))
                buf = buf[size:]
                continue
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed after {len(out)} responses"
        buf += chunk
    assert buf == b""
    return out


async def _closed(stream: trio.SocketStream) -> bool:
    try:
        return await stream.receive_some(1) == b""
    except trio.BrokenResourceError:
        return True


async def test_one_connection_mixes_fast_answers_and_quart_ones(bastion: Running) -> None:
    """Pipelined in one write: two /dispatch, then a /healthz (the hand-off, with the bytes
    already read), then a /dispatch hypercorn answers; all in order, nothing lost."""
    stream = await _connect(bastion)
    async with stream:
        with trio.fail_after(20):
            healthz = b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n"
            await stream.send_all(GET + GET + healthz + GET)
            got = await _responses(stream, 4)
            assert [status for status, _, _ in got] == [200, 200, 200, 200]
            # The front's answers are byte for byte what the app answers through hypercorn.
            assert got[0][2] == got[1][2] == got[3][2]
            assert f"mac={MAC}".encode() in got[0][2] and b"#!ipxe" in got[0][2]
            assert got[2][2] == b'{"status":"ok"}\n'
            # Only the front's answers lack hypercorn's server header.
            assert [b"\r\nserver:" in head.lower() for _, head, _ in got] == [
                False,
                False,
                True,
                True,
            ]
            assert all(b"\r\nx-request-id: " in head.lower() for _, head, _ in got)
            metrics = await bastion.client.get("/metrics", headers=bastion.admin)
            count = re.search(
                r'lab_bastion_http_request_duration_seconds_count\{method="GET",'
                r'route="/dispatch",status="200"\} ([0-9.]+)',
                metrics.text,
            )
            # The two fast answers are observed like the one hypercorn gave.
            assert count is not None and float(count.group(1)) == 3


async def test_a_request_arriving_in_pieces_is_answered(bastion: Running) -> None:
    stream = await _connect(bastion)
    async with stream:
        with trio.fail_after(20):
            for piece in (GET[:3], GET[3:20], GET[20:-1], GET[-1:]):
                await stream.send_all(piece)
            ((status, _, body),) = await _responses(stream, 1)
            assert status == 200 and b"#!ipxe" in body


async def test_connection_close_is_honoured(bastion: Running) -> None:
    stream = await _connect(bastion)
    async with stream:
        with trio.fail_after(20):
            await stream.send_all(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            ((status, head, _),) = await _responses(stream, 1)
            assert status == 200 and b"\r\nconnection: close" in head
            assert await _closed(stream)


async def test_a_bad_mac_gets_the_apps_400(bastion: Running) -> None:
    stream = await _connect(bastion)
    async with stream:
        with trio.fail_after(20):
            await stream.send_all(GET + GET.replace(MAC.encode(), b"zz"))
            (ok, _, _), (bad, _, body) = await _responses(stream, 2)
            assert (ok, bad) == (200, 400) and b"@ mac" in body


async def test_an_idle_connection_is_closed_after_the_idle_timeout(quick: Running) -> None:
    silent, answered = await _connect(quick), await _connect(quick)
    async with silent, answered:
        with trio.fail_after(20):
            await answered.send_all(GET)
            await _responses(answered, 1)
            start = trio.current_time()
            assert await _closed(silent) and await _closed(answered)
            assert trio.current_time() - start < 10


async def test_shutdown_closes_idle_connections_at_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async for bastion in start_bastion(nursery, tmp_path, idle_timeout=60.0):
        stream = await _connect(bastion)
        async with stream:
            with trio.fail_after(20):
                await stream.send_all(GET)
                await _responses(stream, 1)
                bastion.shutdown.set()
            # Well before both the 60 s idle timeout and the 5 s drain.
            with trio.fail_after(4):
                assert await _closed(stream)


async def test_a_trickled_head_is_cut_at_the_idle_timeout(quick: Running) -> None:
    """One byte at a time, each well inside the 1 s idle timeout, still ends at it."""
    stream = await _connect(quick)
    async with stream:
        with trio.fail_after(20):
            start = trio.current_time()
            closed = False
            for byte in GET[:-1]:
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    closed = True
                    break
                with trio.move_on_after(0.3):
                    closed = await _closed(stream)
                if closed:
                    break
            assert closed
            assert trio.current_time() - start < 5
