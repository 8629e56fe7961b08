"""The proxy's own HTTP/1.1 client toward the API server, against a real loopback upstream.

Each test's upstream is a script per accepted connection (what it reads, what it writes,
when it closes), so the rare paths are exact: a close mid-body, a chunked watch fed piece by
piece, a body that runs to the close, a kept-alive connection the server drops while idle or
as the next request arrives, a head that never comes.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from lab import pki
from lab.errors import Unavailable
from lab.labd.kubeproxy.pool import Answer, Pool

Script = Callable[["Peer"], Awaitable[None]]
CAP = 30  # seconds: generous, the box is shared


class Peer:
    """The upstream's side of one connection."""

    def __init__(self, stream: trio.abc.Stream, index: int) -> None:
        self.stream = stream
        self.index = index
        self.buf = b""

    async def request(self) -> bytes:
        """One request head (and a body when it says Content-Length or chunked): its bytes."""
        while b"\r\n\r\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buf += data
        end = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:end], self.buf[end:]
        lowered = head.lower()
        if b"transfer-encoding: chunked" in lowered:
            while not self.buf.endswith(b"0\r\n\r\n"):
                self.buf += await self.stream.receive_some(65536)
            body, self.buf = self.buf, b""
            return head + body
        if b"content-length: " in lowered:
            size = int(lowered.split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(self.buf) < size:
                self.buf += await self.stream.receive_some(65536)
            body, self.buf = self.buf[:size], self.buf[size:]
            return head + body
        return head

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


def ok(body: bytes = b"{}") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@asynccontextmanager
async def upstream(
    scripts: Sequence[Script], *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[int]]]:
    """Serve ``scripts[i]`` on the i-th connection (the last one for any later); yields the
    port and the list of connection indexes accepted so far."""
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        index = len(accepted)
        accepted.append(index)
        s: trio.abc.Stream = stream
        if tls is not None:
            s = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
        try:
            await scripts[min(index, len(scripts) - 1)](Peer(s, index))
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(s)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], accepted
        nursery.cancel_scope.cancel()


NewPool = Callable[..., Pool]


@pytest.fixture
async def new_pool() -> AsyncIterator[NewPool]:
    """``new_pool(port, tls, size=...)``: a pool to 127.0.0.1:port, closed after the test."""
    made: list[Pool] = []

    def make(port: int, tls: ssl.SSLContext | None, **kwargs: int) -> Pool:
        made.append(Pool("c", "127.0.0.1", port, tls, **kwargs))
        return made[-1]

    yield make
    for pool in made:
        pool.close()


async def read_all(answer: Answer) -> bytes:
    try:
        pieces = []
        while piece := await answer.read():
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        await answer.aclose()


async def get(pool: Pool, target: str = "/api/v1/pods") -> tuple[int, bytes]:
    answer = await pool.send("GET", target, [(b"host", b"api")])
    return answer.status, await read_all(answer)


async def serve_forever(peer: Peer) -> None:
    n = 0
    while True:
        await peer.request()
        n += 1
        await peer.send(ok(b'{"n":%d,"conn":%d}' % (n, peer.index)))


async def test_a_kept_alive_connection_carries_the_next_requests_over_tls(
    new_pool: NewPool,
) -> None:
    ca = pki.create_ca("pool test CA")
    key = pki.generate_key()
    cert, _ = pki.issue_server_cert(ca, pki.make_csr(key, "127.0.0.1"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.load_cert_chain(server, cert, key)
    client = pki.client_ssl_context(ca.cert_pem(), alpn=["http/1.1"])
    with trio.fail_after(CAP):
        async with upstream([serve_forever], tls=server) as (port, accepted):
            pool = new_pool(port, client)
            answers = [await get(pool) for _ in range(3)]
            assert answers == [(200, b'{"n":%d,"conn":0}' % n) for n in (1, 2, 3)]
            assert accepted == [0] and pool.opened == 1
            # A pool that does not trust the server's CA never sends the request.
            other = pki.create_ca("another CA")
            stranger = new_pool(port, pki.client_ssl_context(other.cert_pem()))
            with pytest.raises(Unavailable) as refused:
                await get(stranger)
            assert refused.value.details["reason"] == "upstream_unreachable"
            assert "CERTIFICATE_VERIFY_FAILED" in refused.value.message


async def test_a_chunked_watch_is_passed_on_piece_by_piece(new_pool: NewPool) -> None:
    sent_second = trio.Event()
    got_first = trio.Event()

    async def watch(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await peer.send(b'c;ext=1\r\n{"type":"A"}\r\n')
        await got_first.wait()  # the client has the first event before the second exists
        await peer.send(b'7\r\n{"b":1')
        await peer.send(b"}\r\n")
        sent_second.set()
        await peer.send(b"0\r\nX-Trailer: t\r\n\r\n")
        await serve_forever(peer)

    with trio.fail_after(CAP):
        async with upstream([watch]) as (port, accepted):
            pool = new_pool(port, None)
            answer = await pool.send("GET", "/api/v1/pods?watch=true", [(b"host", b"api")])
            pieces = []
            while piece := await answer.read():
                pieces.append(piece)
                if piece == b'{"type":"A"}':
                    got_first.set()
            await answer.aclose()
            assert sent_second.is_set()
            assert b"".join(pieces) == b'{"type":"A"}{"b":1}'
            # The chunked answer ended cleanly: its connection serves the next request.
            assert await get(pool) == (200, b'{"n":1,"conn":0}')
            assert accepted == [0]


async def test_an_upstream_closing_mid_body_is_an_error_and_the_pool_recovers(
    new_pool: NewPool,
) -> None:
    async def cut(peer: Peer) -> None:
        await peer.request()
        await peer.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"items":[')

    with trio.fail_after(CAP):
        async with upstream([cut, serve_forever]) as (port, accepted):
            pool = new_pool(port, None, size=1)
            answer = await pool.send("GET", "/api/v1/pods", [(b"host", b"api")])
            assert answer.status == 200
            with pytest.raises(Unavailable) as broken:
                await read_all(answer)
            assert "mid-answer" in broken.value.message
            # The broken connection is not reused, and its slot (the only one) is free again.
            assert await get(pool) == (200, b'{"n":1,"conn":1}')
            assert accepted == [0, 1]


async def test_a_body_without_length_runs_to_the_close_and_the_connection_is_not_reused(
    new_pool: NewPool,
) -> None:
    async def unframed(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nline one\n")
        await peer.send(b"line two\n")

    with trio.fail_after(CAP):
        async with upstream([unframed, unframed]) as (port, accepted):
            pool = new_pool(port, None)
            assert await get(pool) == (200, b"line one\nline two\n")
            assert await get(pool) == (200, b"line one\nline two\n")
            assert accepted == [0, 1]


async def test_an_idle_connection_the_server_closed_is_not_used(new_pool: NewPool) -> None:
    async def one_then_close(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b'{"conn":%d}' % peer.index))

    with trio.fail_after(CAP):
        async with upstream([one_then_close]) as (port, accepted):
            pool = new_pool(port, None)
            assert await get(pool) == (200, b'{"conn":0}')
            # Wait until the close has reached this side (what the pool checks for).
            while len(accepted) < 1 or not _idle_sockets_readable(pool):
                await trio.sleep(0.01)
            assert await get(pool) == (200, b'{"conn":1}')


def _idle_sockets_readable(pool: Pool) -> bool:
    return all(conn.socket.is_readable() for conn in pool._idle)


async def test_a_get_on_a_connection_dropped_as_it_arrives_is_sent_again_but_a_post_is_not(
    new_pool: NewPool,
) -> None:
    dropped_requests: list[bytes] = []

    async def answer_then_drop_the_next(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b'{"conn":%d}' % peer.index))
        # The next request arrives, and the connection is dropped without a byte of answer.
        dropped_requests.append((await peer.request()).split(b" ")[0])

    post = [(b"host", b"api"), (b"content-length", b"2")]

    async def body() -> AsyncIterator[bytes]:
        yield b"{}"

    with trio.fail_after(CAP):
        scripts = [answer_then_drop_the_next] * 2 + [serve_forever]
        async with upstream(scripts) as (port, accepted):
            pool = new_pool(port, None)
            assert await get(pool) == (200, b'{"conn":0}')
            # The GET meets the drop, then goes again over a fresh connection.
            assert await get(pool) == (200, b'{"conn":1}')
            assert dropped_requests == [b"GET"]
            # A POST that meets the same drop is not sent twice: the caller hears of it.
            with pytest.raises(Unavailable) as dropped:
                await pool.send("POST", "/api/v1/pods", post, body())
            assert dropped.value.details["reason"] == "upstream_unreachable"
            assert dropped_requests == [b"GET", b"POST"] and accepted == [0, 1]
            answer = await pool.send("POST", "/api/v1/pods", post, body())
            assert await read_all(answer) == b'{"n":1,"conn":2}'


async def test_a_body_without_length_is_chunked_and_one_with_a_length_goes_as_is(
    new_pool: NewPool,
) -> None:
    seen: list[bytes] = []

    async def record(peer: Peer) -> None:
        while True:
            seen.append(await peer.request())
            await peer.send(ok())

    async def body() -> AsyncIterator[bytes]:
        yield b'{"kind":'
        yield b""
        yield b'"Pod"}'

    with trio.fail_after(CAP):
        async with upstream([record]) as (port, _):
            pool = new_pool(port, None)
            await read_all(await pool.send("PUT", "/x", [(b"host", b"api")], body()))
            length = [(b"host", b"api"), (b"content-length", b"14")]
            await read_all(await pool.send("PUT", "/x", length, body()))
    assert seen[0] == (
        b"PUT /x HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\n\r\n"
        b'8\r\n{"kind":\r\n6\r\n"Pod"}\r\n0\r\n\r\n'
    )
    assert seen[1] == b'PUT /x HTTP/1.1\r\nhost: api\r\ncontent-length: 14\r\n\r\n{"kind":"Pod"}'


async def test_a_slow_upstream_streams_and_a_caller_giving_up_frees_the_connection(
    new_pool: NewPool,
) -> None:
    trickle = trio.Event()
    parked = trio.Event()

    async def slow(peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            parked.set()
            await trio.sleep_forever()  # never a head
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        await trickle.wait()
        await peer.send(b"cdef")
        await serve_forever(peer)

    with trio.fail_after(CAP):
        async with upstream([slow]) as (port, accepted):
            pool = new_pool(port, None, size=1)
            with trio.move_on_after(0.2) as gave_up:  # the proxy's HEAD_TIMEOUT, shortened
                await pool.send("GET", "/a", [(b"host", b"api")])
            assert gave_up.cancelled_caught and parked.is_set()
            # The one slot is free again, and the head-less connection was not kept.
            answer = await pool.send("GET", "/b", [(b"host", b"api")])
            assert await answer.read() == b"ab"  # before the rest exists
            trickle.set()
            assert await answer.read() == b"cdef"
            await read_all(answer)
            assert await get(pool) == (200, b'{"n":1,"conn":1}')
            assert accepted == [0, 1]


async def test_answers_that_are_no_http_are_unavailable(new_pool: NewPool) -> None:
    async def garbage(peer: Peer) -> None:
        await peer.request()
        if peer.index == 0:
            await peer.send(b"\x16\x03\x01 no HTTP here\r\n\r\n")
        else:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")

    with trio.fail_after(CAP):
        async with upstream([garbage]) as (port, _):
            pool = new_pool(port, None)
            for expected in ("not an HTTP/1.x status line", "a bad Content-Length"):
                with pytest.raises(Unavailable) as bad:
                    await get(pool)
                assert expected in bad.value.message


async def test_a_full_pool_waits_for_an_answer_to_end(new_pool: NewPool) -> None:
    with trio.fail_after(CAP):
        async with upstream([serve_forever]) as (port, accepted):
            pool = new_pool(port, None, size=1)
            held = await pool.send("GET", "/a", [(b"host", b"api")])
            second: list[tuple[int, bytes]] = []
            async with trio.open_nursery() as nursery:

                async def later() -> None:
                    second.append(await get(pool))

                nursery.start_soon(later)
                await trio.testing.wait_all_tasks_blocked()
                assert second == []  # waiting for the one connection
                assert await read_all(held) == b'{"n":1,"conn":0}'
            assert second == [(200, b'{"n":2,"conn":0}')]
            assert accepted == [0]


async def test_a_header_that_would_split_the_request_is_never_sent(new_pool: NewPool) -> None:
    async def never(peer: Peer) -> None:
        raise AssertionError("no connection expected")

    with trio.fail_after(CAP):
        async with upstream([never]) as (port, accepted):
            pool = new_pool(port, None)
            evil = [(b"host", b"api"), (b"impersonate-group", b"x\r\nImpersonate-User: admin")]
            with pytest.raises(Unavailable):
                await pool.send("GET", "/a", evil)
            assert accepted == []
