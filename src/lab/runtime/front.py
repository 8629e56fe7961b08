"""A front for plain-HTTP connections: the first reader of a connection, before hypercorn.

A daemon whose one hot route is too hot for hypercorn's per-request machinery (a task per
request, h11 events, an idle-timer task restarted per request) gives :func:`serve_asgi` a
:class:`ConnectionFront`. The front reads the connection itself and answers the requests it
knows; at the first request it does not know it hands the connection to hypercorn, with the
bytes it already read pushed back in front (:class:`PushedBack`), and hypercorn serves the
connection from there to its end. The ASGI app stays the one definition of everything else,
its error answers included.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from lab.runtime.tlsread import BULK_READ, receive_records


class ConnectionFront(Protocol):
    async def serve(self, stream: trio.SocketStream) -> trio.abc.Stream | None:
        """Serve ``stream``: ``None`` when the front served it to its end (and closed it),
        else the stream hypercorn continues from, with no byte lost."""

    def close_idle(self) -> None:
        """The server is shutting down: close connections waiting for a request now, and
        the others once their answer is sent."""


class TLSConnectionFront(Protocol):
    """A front for TLS connections: it reads each HTTP/1.1 connection first, once the
    handshake (and the client certificate's check) is done."""

    async def serve(
        self,
        stream: trio.SSLStream[Any],
        tls: dict[str, Any],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> trio.abc.Stream | None:
        """Serve ``stream`` (``tls`` is its ASGI ``tls`` extension, ``client`` and ``server``
        the scope's addresses): ``None`` when served to its end (and closed), else the stream
        hypercorn continues from (a :class:`PushedBackTLS`). A front that serves the
        connection to its end may empty ``tls`` (no one reads it after)."""

    def close_idle(self) -> None:
        """As :meth:`ConnectionFront.close_idle`."""


class PushedBack(trio.abc.Stream):
    """A socket stream with bytes already read put back in front of what it receives next.

    It has the ``socket`` hypercorn reads the addresses from, and no ``do_handshake``: to
    hypercorn it is a plain TCP stream.
    """

    def __init__(self, stream: trio.SocketStream, data: bytes) -> None:
        self.stream = stream
        self.socket = stream.socket
        self._data = memoryview(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._data:
            return await self.stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._data) if max_bytes is None else max_bytes
        data, self._data = bytes(self._data[:size]), self._data[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


class PushedBackTLS(trio.abc.Stream):
    """A TLS stream with bytes already read put back in front of what it receives next.

    ``tls_stream`` is the stream itself (hypercorn reads its ALPN protocol and socket there);
    it has no ``send_eof`` (hypercorn then treats it as the TLS stream it is).
    """

    def __init__(self, stream: trio.SSLStream[Any] | PushedBackTLS, data: bytes) -> None:
        self.tls_stream: trio.SSLStream[Any]
        self._data: memoryview
        if isinstance(stream, PushedBackTLS):
            # A front handing on what another front pushed back: one layer, the bytes read
            # first, then what the first front had not given out yet.
            self.tls_stream = stream.tls_stream
            self._data = memoryview(data + bytes(stream._data))
        else:
            self.tls_stream = stream
            self._data = memoryview(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._data:
            # Whole buffers, as hypercorn reads an SSLStream (lab.runtime.tlsread).
            return await receive_records(self.tls_stream, max_bytes or BULK_READ)
        await trio.lowlevel.checkpoint()
        size = len(self._data) if max_bytes is None else max_bytes
        data, self._data = bytes(self._data[:size]), self._data[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.tls_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.tls_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.tls_stream.aclose()


__all__ = ["ConnectionFront", "PushedBack", "PushedBackTLS", "TLSConnectionFront"]
