"""lab.runtime.rawupgrade through serve_asgi on a real socket: an upgrade under the prefix
becomes a byte tunnel the app drives; everything else is hypercorn as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import trio

from lab.runtime.rawupgrade import EXTENSION
from lab.runtime.tls_server import serve_asgi

SEEN: list[dict[str, Any]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    raw = EXTENSION in scope.get("extensions", {})
    SEEN.append({"path": scope["path"], "raw": raw})
    if raw and scope["path"] == "/t/echo":
        await send({"type": "http.response.start", "status": 101,
                    "headers": [(b"upgrade", b"x-echo"), (b"connection", b"Upgrade")]})  # fmt: skip
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            if message["body"] == b"bye":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send({"type": "http.response.body", "body": message["body"], "more_body": True})
    status = 403 if raw else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"2")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"no" if raw else b"ok"})


@asynccontextmanager
async def serving() -> AsyncIterator[int]:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(
            partial(
                serve_asgi,
                app,
                host="127.0.0.1",
                port=0,
                shutdown_event=shutdown,
                raw_upgrade_prefixes=("/t/",),
            )
        )
        try:
            yield port
        finally:
            shutdown.set()


def request(target: str, *headers: tuple[str, str], body: bytes = b"") -> bytes:
    conn = h11.Connection(h11.CLIENT)
    sent = [("Host", "x"), *headers]
    if body:
        sent.append(("Content-Length", str(len(body))))
    out = conn.send(h11.Request(method="POST", target=target, headers=sent))
    return out + (conn.send(h11.Data(data=body)) if body else b"") + conn.send(h11.EndOfMessage())


UPGRADE = (("Connection", "Upgrade"), ("Upgrade", "x-echo"))


async def read_until(stream: trio.SocketStream, needle: bytes, seen: bytes = b"") -> bytes:
    while needle not in seen:
        data = await stream.receive_some(65536)
        assert data, seen
        seen += data
    return seen


async def test_an_upgrade_under_the_prefix_is_a_tunnel() -> None:
    SEEN.clear()
    with trio.fail_after(30):
        async with serving() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                # Bytes right behind the head reach the app once the tunnel is open.
                await stream.send_all(request("/t/echo", *UPGRADE) + b"early")
                got = await read_until(stream, b"early")
                assert got.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
                assert b"upgrade: x-echo\r\n" in got
                await stream.send_all(b"\x00\xffbinary")
                await read_until(stream, b"\x00\xffbinary")
                await stream.send_all(b"bye")
                rest = b""
                while data := await stream.receive_some(65536):  # the app ended: closed
                    rest += data
                assert rest == b""
            assert SEEN == [{"path": "/t/echo", "raw": True}]


async def test_a_refused_upgrade_and_the_rest_are_ordinary_http() -> None:
    SEEN.clear()
    with trio.fail_after(30):
        async with serving() as port:
            for target, headers, body, expect in (
                ("/t/denied", UPGRADE, b"", b"HTTP/1.1 403 "),
                ("/other", UPGRADE, b"", b"HTTP/1.1 200 "),  # not under the prefix
                ("/t/echo", UPGRADE, b"payload", b"HTTP/1.1 200 "),  # has a body
                ("/t/echo", (), b"", b"HTTP/1.1 200 "),  # no upgrade asked
            ):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(request(target, *headers, body=body))
                    got = await read_until(stream, b"\r\n\r\n")
                    assert got.startswith(expect), (target, got)
                    if expect.endswith(b"403 "):
                        assert b"connection: close" in got.lower()
            assert [s["raw"] for s in SEEN] == [True, False, False, False]
