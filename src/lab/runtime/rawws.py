"""A server-side WebSocket (RFC 6455) served on the connection itself, below the web framework.

labd holds one WebSocket per agent, 10,000 of them on one process. Served through hypercorn and
quart each costs a stack of tasks, channels and framework contexts (hypercorn's connection and
app tasks, quart-trio's message and handler tasks, three memory channels, quart's request
context): a memory profile put that at over half of a session's Python objects. This module is
what replaces it for one route: a sans-IO part and a small trio driver.

- :func:`parse_upgrade` reads one request head and says whether it is a plain WebSocket
  upgrade to the given path (:class:`Upgrade`), whether more bytes are needed (``None``), or
  whether the connection belongs to hypercorn (:data:`HAND_OFF`). It takes a strict subset of
  HTTP/1.1 (no query, no body, no subprotocol, no extension offered, version 13); anything
  else, however odd, is left to hypercorn and the app, whose answers stay the only ones.
- :class:`FrameReader` turns the client's bytes into messages (``str`` for text, ``bytes`` for
  binary), :class:`Ping` and :class:`Closed`; a broken frame raises :class:`WebSocketError`
  with the close code to answer. :func:`frame` builds the server's (unmasked) frames.
- :class:`RawWebSocket` drives both over a trio stream with the interface the agent hub uses
  (``receive``, ``send``, ``close``). When the peer goes away (or breaks the protocol), the
  scope given to it is cancelled, as quart-trio cancels a WebSocket handler.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import struct
from typing import NoReturn

import trio
from attrs import frozen

from lab.runtime.httphead import FIELD, HAND_OFF, HandOff, head_end

MAX_HEAD = 8192
"""A longer request head goes to hypercorn, whose own limit then answers it."""

MAX_MESSAGE = 16 * 1024 * 1024
"""hypercorn's default ``websocket_max_message_size``: the same limit as before, closed 1009."""

RECEIVE_SIZE = 16384
"""Bytes asked of the stream per read. An agent's messages are small; a large data frame
arrives over several reads."""

CLOSE_WAIT = 1.0
"""Seconds to wait for the peer's answering close frame before dropping the connection."""

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_OPCODES = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})


@frozen
class Upgrade:
    """A WebSocket upgrade request head, ``size`` bytes long."""

    key: bytes
    size: int
    request_id: str | None


# RFC 9110 token names; values of visible characters, spaces, tabs and obs-text.
# Present: the request is not the plain upgrade served here (hypercorn answers it).
_REFUSED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    }
)
_ONCE = (b"host", b"upgrade", b"sec-websocket-key", b"sec-websocket-version")


def parse_upgrade(buf: bytes | bytearray, path: bytes) -> Upgrade | HandOff | None:
    """The request at the start of ``buf``: an :class:`Upgrade` to exactly ``path``,
    :data:`HAND_OFF`, or ``None`` when its head is not complete yet."""
    line = b"GET " + path + b" HTTP/1.1\r\n"
    if not buf.startswith(line[: len(buf)]):
        return HAND_OFF
    end = head_end(buf, MAX_HEAD)
    if not isinstance(end, int):
        return end
    pos, stop = len(line), end + 2
    seen: dict[bytes, bytes] = {}
    connection: set[bytes] = set()
    rid = None
    while pos < stop:
        field = FIELD.match(buf, pos, stop)
        if field is None:
            return HAND_OFF
        pos = field.end()
        name, value = field.group(1).lower(), field.group(2)
        if name in _REFUSED:
            return HAND_OFF
        if name in _ONCE:
            if name in seen:
                return HAND_OFF
            seen[name] = value
        elif name == b"connection":
            connection.update(t.strip().lower() for t in value.split(b","))
        elif name == b"x-request-id":
            rid = value.decode("latin-1")
    if (
        len(seen) != len(_ONCE)
        or b"upgrade" not in connection
        or seen[b"upgrade"].lower() != b"websocket"
        or seen[b"sec-websocket-version"] != b"13"
    ):
        return HAND_OFF
    key = seen[b"sec-websocket-key"]
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return HAND_OFF
    except binascii.Error:
        return HAND_OFF
    return Upgrade(key=key, size=end + 4, request_id=rid)


def accept_response(key: bytes) -> bytes:
    """The ``101 Switching Protocols`` head that accepts the upgrade of ``key``."""
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 (RFC 6455)
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-accept: " + accept + b"\r\n\r\n"
    )


class WebSocketError(Exception):
    """The peer broke the WebSocket protocol: close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@frozen
class Ping:
    payload: bytes


@frozen
class Closed:
    """The peer's close frame (1005 when it carried no code)."""

    code: int
    reason: str


Event = str | bytes | Ping | Closed

_VALID_CLOSE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def unmask(payload: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key``.

    Every fourth byte shares a key byte, so each of the four strided slices is one
    ``bytes.translate`` through that byte's XOR table: 0.86 ms per MB where one big-integer
    XOR over the whole payload (``int.from_bytes`` both ways) took 2.8 ms (256 KiB frames),
    and this is every byte an agent sends labd (exec output).
    """
    size = len(payload)
    if not size:
        return b""
    out = bytearray(payload)
    for offset, byte in enumerate(bytes(key[:4])):
        if byte:
            out[offset::4] = out[offset::4].translate(_xor_table(byte))
    return bytes(out)


@functools.cache
def _xor_table(byte: int) -> bytes:
    """The ``bytes.translate`` table of ``x -> x ^ byte``."""
    return bytes(value ^ byte for value in range(256))


class FrameReader:
    """The client frames of one connection, as messages (sans-IO).

    Idle, it holds no buffer: a frame that arrives whole is read from the bytes as given.
    """

    __slots__ = ("_buf", "_opcode", "_parts", "_size", "closed", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf: bytearray | None = None  # an incomplete frame
        self._parts: list[bytes] | None = None  # a fragmented message so far
        self._opcode = 0
        self._size = 0
        self.closed = False  # a close frame was read: nothing after it is

    def receive(self, data: bytes | bytearray) -> list[Event]:
        """What ``data`` completes; raises :class:`WebSocketError`."""
        if self.closed:
            return []
        if self._buf is not None:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        events: list[Event] = []
        pos = 0
        while not self.closed:
            used = self._frame(buf, pos, events)
            if not used:
                break
            pos += used
        if pos >= len(buf) or self.closed:
            self._buf = None
        elif buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        return events

    def _frame(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> int:
        """Read one frame at ``pos``: its length, or 0 when it is not all there yet."""
        available = len(buf) - pos
        if available < 2:
            return 0
        first, second = buf[pos], buf[pos + 1]
        opcode, length = first & 0x0F, second & 0x7F
        if first & 0x70:
            raise WebSocketError(1002, "reserved bits set (no extension was agreed)")
        if opcode not in _OPCODES:
            raise WebSocketError(1002, f"unknown opcode {opcode:#x}")
        if not second & 0x80:
            raise WebSocketError(1002, "client frames must be masked")
        head = 2
        if length == 126:
            if available < 4:
                return 0
            length, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
        elif length == 127:
            if available < 10:
                return 0
            length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
        fin = bool(first & 0x80)
        if opcode >= CLOSE:
            if length > 125 or not fin:
                raise WebSocketError(1002, "control frames are short and unfragmented")
        elif self._size + length > self.max_message:
            raise WebSocketError(1009, f"message larger than {self.max_message} bytes")
        total = head + 4 + length
        if available < total:
            return 0
        start = pos + head + 4
        payload = unmask(memoryview(buf)[start : pos + total], buf[start - 4 : start])
        if opcode >= CLOSE:
            self._control(opcode, payload, events)
        else:
            self._data(opcode, payload, fin, events)
        return total

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == PING:
            events.append(Ping(payload))
        elif opcode == CLOSE:
            self.closed = True
            events.append(_close_event(payload))
        # PONG: nothing asked for one; ignored.

    def _data(self, opcode: int, payload: bytes, fin: bool, events: list[Event]) -> None:
        if opcode == CONTINUATION:
            if self._parts is None:
                raise WebSocketError(1002, "continuation frame without a message")
            self._parts.append(payload)
        elif self._parts is not None:
            raise WebSocketError(1002, "new message inside a fragmented one")
        elif fin:
            events.append(_message(opcode, payload))
            return
        else:
            self._opcode, self._parts = opcode, [payload]
        self._size += len(payload)
        if fin:
            whole, self._parts, self._size = b"".join(self._parts), None, 0
            events.append(_message(self._opcode, whole))


def _message(opcode: int, payload: bytes) -> str | bytes:
    if opcode == BINARY:
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(1007, "text message is not UTF-8") from None


def _close_event(payload: bytes) -> Closed:
    if not payload:
        return Closed(1005, "")
    if len(payload) == 1:
        raise WebSocketError(1002, "close frame with a 1-byte payload")
    code = struct.unpack_from("!H", payload)[0]
    if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
        raise WebSocketError(1002, f"close code {code} is not one a peer may send")
    try:
        return Closed(code, payload[2:].decode("utf-8"))
    except UnicodeDecodeError:
        raise WebSocketError(1007, "close reason is not UTF-8") from None


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut (at a character) to fit a control frame."""
    encoded = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return frame(CLOSE, struct.pack("!H", code) + encoded)


class RawWebSocket:
    """The trio driver: a WebSocket over ``stream`` after the 101 was sent.

    ``scope`` is cancelled when the peer goes away, closes, or breaks the protocol (after
    answering its close, or closing with the error's code): the task serving the WebSocket
    runs inside it and ends there, as a quart-trio WebSocket handler is cancelled. ``data``
    holds bytes the client sent after its request head. One task receives; sending is safe
    from any task (a lock orders the frames).
    """

    __slots__ = ("_closed", "_events", "_lock", "_reader", "scope", "stream")

    def __init__(self, stream: trio.abc.Stream, scope: trio.CancelScope, data: bytes = b"") -> None:
        self.stream = stream
        self.scope = scope
        self._reader = FrameReader()
        self._lock = trio.Lock()
        self._closed = False  # our close frame was sent
        self._events: list[Event] = self._reader.receive(data) if data else []

    async def receive(self) -> str | bytes:
        """The next message. When there is none to come, the scope is cancelled and this
        raises ``trio.Cancelled``."""
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, str | bytes):
                    return event
                if isinstance(event, Ping):
                    await self._send_quietly(frame(PONG, event.payload))
                else:
                    await self._answer_close(event)
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                await self._gone()
            try:
                self._events = self._reader.receive(data)
            except WebSocketError as exc:
                await self._send_quietly(close_frame(exc.code, exc.reason))
                self._closed = True
                await self._gone()

    async def send(self, data: str | bytes) -> None:
        """Send one message; raises ``trio.BrokenResourceError`` when the peer is gone."""
        if isinstance(data, str):
            payload = frame(TEXT, data.encode("utf-8"))
        else:
            payload = frame(BINARY, data)
        async with self._lock:
            await self.stream.send_all(payload)

    async def close(self, code: int, reason: str = "") -> None:
        """Send our close frame and wait (briefly) for the peer's answer."""
        if self._closed:
            return
        self._closed = True
        await self._send_quietly(close_frame(code, reason))
        with trio.move_on_after(CLOSE_WAIT):
            while not self._reader.closed:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    self._reader.receive(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, WebSocketError):
                    return
                if not data:
                    return

    async def _answer_close(self, event: Closed) -> None:
        if not self._closed:
            self._closed = True
            code = 1000 if event.code == 1005 else event.code
            await self._send_quietly(close_frame(code, ""))
        await self._gone()

    async def _send_quietly(self, data: bytes) -> None:
        try:
            async with self._lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _gone(self) -> NoReturn:
        self.scope.cancel()
        await trio.sleep_forever()


__all__ = [
    "HAND_OFF",
    "Closed",
    "FrameReader",
    "HandOff",
    "Ping",
    "RawWebSocket",
    "Upgrade",
    "WebSocketError",
    "accept_response",
    "close_frame",
    "frame",
    "parse_upgrade",
]
