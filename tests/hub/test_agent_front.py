"""``/ws/agent`` served below hypercorn and quart (lab.labd.api.agent_front), with a real labd."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, wrap_client_stream

from lab.labd.hub.session import AgentConnection
from lab.proto import decode, encode
from lab.proto.messages import Hello, Welcome
from lab.runtime.rawws import RawWebSocket, unmask
from tests.hub.hubtools import agent_creds, enroll_state, labd_with_hub, raw_agent, say_hello
from tests.labd.harness import Credentials, RunningLabd

UPGRADE = (
    b"GET /ws/agent HTTP/1.1\r\nHost: labd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def session_of(hub_live: set[AgentConnection], name: str) -> AgentConnection:
    [conn] = [c for c in hub_live if c.name == name]
    return conn


def masked(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + unmask(payload, key)


async def tls_to(labd: RunningLabd, creds: Credentials) -> trio.SSLStream[trio.SocketStream]:
    context = labd.ssl_context(creds, alpn=["http/1.1"])
    return await trio.open_ssl_over_tcp_stream(
        labd.host, labd.port, ssl_context=context, https_compatible=True
    )


async def read_until(stream: trio.abc.Stream, end: bytes) -> bytes:
    data = b""
    while end not in data:
        chunk = await stream.receive_some(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


async def read_frame(stream: trio.abc.Stream, buf: bytearray) -> tuple[int, bytes]:
    """One (unmasked) server frame: its opcode and payload; ``buf`` keeps what follows."""

    async def need(size: int) -> None:
        while len(buf) < size:
            chunk = await stream.receive_some(4096)
            assert chunk, f"connection closed after {bytes(buf)!r}"
            buf.extend(chunk)

    await need(2)
    length, head = buf[1] & 0x7F, 2
    if length == 126:
        await need(4)
        length, head = struct.unpack_from("!H", buf, 2)[0], 4
    await need(head + length)
    opcode, payload = buf[0] & 0x0F, bytes(buf[head : head + length])
    del buf[: head + length]
    return opcode, payload


async def test_an_agent_session_is_served_below_quart(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            async with raw_agent(labd.running, agent_creds(tmp_path / "a1", "web1")) as ws:
                assert isinstance(await say_hello(ws), Welcome)
                assert isinstance(session_of(labd.hub._live, "web1").transport, RawWebSocket)
                await ws.ping(b"still there?")  # returns once labd's pong arrived
                await ws.aclose()  # labd answers the close frame
                assert ws.closed is not None and ws.closed.code == 1000
                await labd.hub.wait_offline("web1")


async def test_an_upgrade_it_does_not_take_is_served_by_the_app(tmp_path: Path) -> None:
    """An extension offered: the bytes already read go to hypercorn, the app serves it."""
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            stream = await tls_to(labd.running, agent_creds(tmp_path / "a1", "web1"))
            try:
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    labd.running.host,
                    "/ws/agent",
                    extra_headers=[(b"sec-websocket-extensions", b"x-not-known")],
                )
                assert isinstance(await say_hello(ws), Welcome)
                transport = session_of(labd.hub._live, "web1").transport
                assert not isinstance(transport, RawWebSocket)
                await ws.aclose()
            finally:
                await trio.aclose_forcefully(stream)


async def test_a_user_certificate_is_refused_by_the_app(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True) as rejected:
                async with trio.open_nursery() as nursery:
                    stream = await tls_to(labd.running, admin)
                    try:
                        await wrap_client_stream(nursery, stream, labd.running.host, "/ws/agent")
                    finally:
                        await trio.aclose_forcefully(stream)
            refusal = rejected.value.exceptions[0]
            assert isinstance(refusal, ConnectionRejected) and refusal.status_code == 403


async def test_a_broken_frame_closes_that_session_only(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            await enroll_state(labd.running, admin, "web2", tmp_path / "a2")
            async with raw_agent(labd.running, agent_creds(tmp_path / "a1", "web1")) as ws:
                assert isinstance(await say_hello(ws), Welcome)
                stream = await tls_to(labd.running, agent_creds(tmp_path / "a2", "web2"))
                try:
                    await stream.send_all(UPGRADE)
                    head = await read_until(stream, b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 101 ")
                    buf = bytearray(head[head.index(b"\r\n\r\n") + 4 :])
                    hello = encode(Hello(version="raw", facts={}, labels={})).encode()
                    await stream.send_all(masked(0x1, hello))
                    opcode, welcome = await read_frame(stream, buf)
                    assert opcode == 0x1 and isinstance(decode(welcome.decode()), Welcome)
                    assert labd.hub.is_online("web2")
                    await stream.send_all(b"\x81\x05hello")  # not masked
                    opcode, closing = await read_frame(stream, buf)
                    assert opcode == 0x8 and struct.unpack("!H", closing[:2]) == (1002,)
                    assert await stream.receive_some(4096) == b""  # then labd hangs up
                finally:
                    await trio.aclose_forcefully(stream)
                await labd.hub.wait_offline("web2")
                assert labd.hub.is_online("web1")
                await ws.ping(b"unaffected")
