"""A sans-IO WebSocket client (RFC 6455) on the standard library alone.

labctl's fast ``exec`` (:mod:`lab.cli.exec_fast`) runs on blocking stdlib sockets; trio,
trio-websocket, wsproto and h11 cost more to import than the whole round trip takes. This
core does no I/O: :class:`ClientHandshake` builds the upgrade request and checks the answer,
:func:`frame` builds one masked frame, :class:`FrameReader` turns received bytes into whole
messages. Only what labd's ``/ws/exec`` needs: no extensions, no subprotocols.
"""

from __future__ import annotations

import base64
import hashlib
import os

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
_CONTINUATION = 0x0

# RFC 6455 7.4.1: close codes a peer may not put on the wire.
NO_STATUS = 1005
ABNORMAL = 1006
TOO_BIG = 1009
# A reply head longer than this is not an HTTP response we want.
MAX_HEAD = 64 * 1024


class WebSocketError(Exception):
    """The peer broke RFC 6455 (or the upgrade failed); the connection is unusable."""


class Rejected(WebSocketError):
    """The server answered the upgrade with an HTTP response other than 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"server rejected the WebSocket upgrade with {status}")
        self.status = status
        self.body = body


class ClientHandshake:
    """The opening handshake: :meth:`request` to send, then :meth:`receive` what came back
    until it returns the bytes that follow the response (the first frames, maybe)."""

    def __init__(self, host: str, path: str, key: bytes | None = None) -> None:
        self.host = host
        self.path = path
        self.key = base64.b64encode(key or os.urandom(16))
        self._buffer = bytearray()
        self._head: tuple[int, dict[str, str]] | None = None

    def request(self) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        ).encode()

    def receive(self, data: bytes) -> bytes | None:
        """Feed received bytes (``b""``: the peer closed). Returns the bytes after an accepted
        upgrade's head, None while more are needed; raises :class:`Rejected` for another
        status (with its body) and :class:`WebSocketError` for a broken answer."""
        self._buffer += data
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if not data:
                    raise WebSocketError("connection closed during the WebSocket handshake")
                if len(self._buffer) > MAX_HEAD:
                    raise WebSocketError("the handshake response head is too long")
                return None
            self._head = _parse_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
        status, headers = self._head
        if status == 101:
            self._check_upgrade(headers)
            rest = bytes(self._buffer)
            self._buffer.clear()
            return rest
        body = _body(self._buffer, headers, closed=not data)
        if body is None:
            return None
        raise Rejected(status, body)

    def _check_upgrade(self, headers: dict[str, str]) -> None:
        if headers.get("upgrade", "").lower() != "websocket":
            raise WebSocketError("the server did not upgrade to websocket")
        if "upgrade" not in [t.strip() for t in headers.get("connection", "").lower().split(",")]:
            raise WebSocketError("the server's Connection header does not say upgrade")
        # RFC 6455 4.2.2 fixes SHA-1 here; it proves nothing about security.
        digest = hashlib.sha1(self.key + GUID, usedforsecurity=False).digest()
        accept = base64.b64encode(digest).decode()
        if headers.get("sec-websocket-accept", "") != accept:
            raise WebSocketError("the server's Sec-WebSocket-Accept does not match our key")
        if headers.get("sec-websocket-extensions") or headers.get("sec-websocket-protocol"):
            raise WebSocketError("the server chose an extension or subprotocol we did not offer")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WebSocketError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise WebSocketError(f"malformed header line {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), headers


def _body(buffer: bytearray, headers: dict[str, str], *, closed: bool) -> bytes | None:
    """A rejection's body once it is whole (Content-Length, chunked, or up to the close)."""
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        size = int(length)
        if len(buffer) >= size:
            return bytes(buffer[:size])
        return bytes(buffer) if closed else None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out, pos = bytearray(), 0
        while True:
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                return bytes(out) if closed else None
            size = int(bytes(buffer[pos:end]).split(b";")[0] or b"0", 16)
            if size == 0:
                return bytes(out)
            if len(buffer) < end + 2 + size + 2:
                return bytes(out) if closed else None
            out += buffer[end + 2 : end + 2 + size]
            pos = end + 2 + size + 2
    return bytes(buffer) if closed else None


def mask(payload: bytes | memoryview, key: bytes) -> bytes:
    """``payload`` XOR-ed with the 4-byte ``key`` repeated (one big-integer operation)."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return value.to_bytes(n, "big")


def frame(opcode: int, payload: bytes | memoryview, key: bytes | None = None) -> bytes:
    """One final, masked client frame (a client masks every frame, RFC 6455 5.3)."""
    key = key or os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + mask(payload, key)


def close_frame(code: int, reason: str = "", key: bytes | None = None) -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big") + reason.encode()[:123], key)


class FrameReader:
    """Whole messages out of the bytes a server sent.

    :meth:`feed` them in, then call :meth:`next` until it returns None. Each message is
    ``(opcode, payload)``: TEXT or BINARY (fragments joined), PING, PONG or CLOSE (its
    payload as sent). A message longer than ``max_message`` raises :class:`TooBig`.
    """

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> tuple[int, bytes] | None:
        while True:
            parsed = self._frame()
            if parsed is None:
                return None
            fin, opcode, payload = parsed
            if opcode >= CLOSE:
                if not fin or len(payload) > 125:
                    raise WebSocketError("a control frame is fragmented or too long")
                return opcode, payload
            if opcode == _CONTINUATION:
                if not self._fragments:
                    raise WebSocketError("a continuation frame starts no message")
            elif opcode in (TEXT, BINARY):
                if self._fragments:
                    raise WebSocketError("a new message before the last one ended")
                self._fragment_opcode = opcode
                self._fragment_size = 0
            else:
                raise WebSocketError(f"unknown opcode {opcode}")
            self._fragment_size += len(payload)
            if self._fragment_size > self.max_message:
                raise TooBig(f"a message exceeds {self.max_message} bytes")
            if fin and not self._fragments:
                return opcode, payload
            self._fragments.append(payload)
            if fin:
                whole = b"".join(self._fragments)
                self._fragments.clear()
                return self._fragment_opcode, whole

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise WebSocketError("reserved bits set (no extension was negotiated)")
        if second & 0x80:
            raise WebSocketError("a server frame is masked")
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = int.from_bytes(buf[2:10], "big"), 10
        if length > self.max_message:
            raise TooBig(f"a frame of {length} bytes exceeds {self.max_message}")
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        return bool(first & 0x80), first & 0x0F, payload


class TooBig(WebSocketError):
    """A message longer than the reader accepts (close code 1009)."""


def parse_close(payload: bytes) -> tuple[int, str]:
    """A close frame's (code, reason); 1005 when it carries none."""
    if len(payload) < 2:
        return NO_STATUS, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")


__all__ = [
    "BINARY",
    "CLOSE",
    "PING",
    "PONG",
    "TEXT",
    "ClientHandshake",
    "FrameReader",
    "Rejected",
    "TooBig",
    "WebSocketError",
    "close_frame",
    "frame",
    "mask",
    "parse_close",
]
