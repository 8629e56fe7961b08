"""HTTP/1.1 toward the API server, sans-IO: a request head out, a response in.

The proxy's upstream client (:mod:`lab.labd.kubeproxy.pool`) needs only the client half of
HTTP/1.1, for requests it has already checked: :func:`request_head` writes one, and
:class:`ResponseReader` reads the answer from whatever bytes arrive, yielding its head, its
body's pieces (de-chunked as they come, never waiting for a whole chunk: a watch is a chunked
body that may last hours) and its end. A profile of labd proxying GETs had the general-purpose
client (request building, header models, its pool's bookkeeping) at 45 % of labd's CPU; this
is the few lines the proxy needs.

Framing follows RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304; chunked when the last
transfer coding is ``chunked``; else ``Content-Length`` (repeated values must agree); else the
body runs to the end of the connection. A connection is reused only after an HTTP/1.1 answer
framed by length or chunks, without ``Connection: close``, with no byte after it. Anything
malformed raises :class:`BadResponse`, and the connection is dropped.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Final

from attrs import frozen

MAX_HEAD = 64 * 1024
"""An answer head (status line and headers) longer than this is refused."""
MAX_CHUNK_LINE = 4096
"""A chunk-size line (with its extensions) or trailer line longer than this is refused."""

Headers = list[tuple[bytes, bytes]]


class BadResponse(Exception):
    """The API server's bytes are not an HTTP/1.1 answer to the request sent."""


class BadRequestHead(ValueError):
    """A request head would not be one request (a CR, LF or NUL inside a field)."""


class Need(enum.Enum):
    DATA = enum.auto()


class Ended(enum.Enum):
    END = enum.auto()


NEED_DATA: Final = Need.DATA
END: Final = Ended.END


@frozen
class Head:
    status: int
    headers: Headers
    """Names lower-cased, values as sent (surrounding blanks removed), in order."""


Event = Head | bytes | Need | Ended


def request_head(method: str, target: str, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``METHOD TARGET HTTP/1.1`` and the headers, ended by the blank line.

    Raises :class:`BadRequestHead` when a method, target, name or value holds a CR, LF or NUL
    (the result would be more than one request); the callers' values come from a parsed
    request and labd's own settings, so this is a guard, not a parser.
    """
    parts = [method.encode("ascii"), b" ", target.encode("ascii"), b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += [name, b": ", value, b"\r\n"]
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\x00" in head:
        raise BadRequestHead("a request field holds a line break or NUL")
    return head


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked request body (empty ``data`` is not a chunk: it would end it)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")


class _State(enum.Enum):
    HEAD = enum.auto()
    LENGTH = enum.auto()
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_CRLF = enum.auto()
    TRAILERS = enum.auto()
    UNTIL_CLOSE = enum.auto()
    DONE = enum.auto()


class ResponseReader:
    """The answer to one request: :meth:`feed` it bytes (``b""`` for the end of the
    connection) and take events with :meth:`next_event` until :data:`END`.

    Events: one :class:`Head` (1xx answers before it are skipped), then ``bytes`` pieces of
    the body, then :data:`END`; :data:`NEED_DATA` when more bytes are needed first.
    """

    __slots__ = ("_buf", "_eof", "_head_request", "_left", "_state", "keep_alive", "status")

    def __init__(self, *, head_request: bool = False) -> None:
        self._buf = b""
        self._eof = False
        self._head_request = head_request
        self._state = _State.HEAD
        self._left = 0
        self.status = 0
        self.keep_alive = False
        """Whether the connection may carry another request once :data:`END` is out."""

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def trailing(self) -> bytes:
        """Bytes received after the answer's end."""
        return self._buf if self._state is _State.DONE else b""

    def feed(self, data: bytes | bytearray) -> None:
        if type(data) is not bytes:
            data = bytes(data)
        if not data:
            self._eof = True
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    def next_event(self) -> Event:
        state = self._state
        if state is _State.LENGTH:
            return self._length()
        if state is _State.HEAD:
            return self._head()
        if state is _State.UNTIL_CLOSE:
            if self._buf:
                data, self._buf = self._buf, b""
                return data
            if self._eof:
                self._state = _State.DONE
                return END
            return NEED_DATA
        if state is _State.DONE:
            return END
        return self._chunked()

    # -- head ----------------------------------------------------------------------------

    def _head(self) -> Event:
        while True:
            buf = self._buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) >= MAX_HEAD:
                    raise BadResponse(f"an answer head longer than {MAX_HEAD} bytes")
                if self._eof:
                    raise BadResponse("the connection closed before an answer head")
                return NEED_DATA
            if end + 4 > MAX_HEAD:
                raise BadResponse(f"an answer head longer than {MAX_HEAD} bytes")
            self._buf = buf[end + 4 :]
            head = self._parse_head(buf[:end])
            if head is not None:
                return head

    def _parse_head(self, raw: bytes) -> Head | None:
        lines = raw.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        minor, status = match.group(1), int(match.group(2))
        headers: Headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or _TOKEN.fullmatch(name) is None or b"\n" in value or b"\r" in value:
                raise BadResponse(f"a malformed answer header line: {line[:80]!r}")
            headers.append((name.lower(), value.strip(b" \t")))
        if status < 200:
            if status == 101:
                raise BadResponse("101 Switching Protocols to a request that asked for none")
            return None  # 100 Continue, 103 Early Hints: the real answer follows
        self.status = status
        self._frame(minor == b"1", status, headers)
        return Head(status=status, headers=headers)

    def _frame(self, http11: bool, status: int, headers: Headers) -> None:
        codings: list[bytes] = []
        lengths: list[bytes] = []
        close = not http11
        for name, value in headers:
            if name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
            elif name == b"content-length":
                lengths += [v.strip() for v in value.split(b",")]
            elif name == b"connection" and b"close" in [
                t.strip().lower() for t in value.split(b",")
            ]:
                close = True
        if self._head_request or status in (204, 304):
            self._state = _State.DONE
            self.keep_alive = not close
            return
        if codings:
            if codings[-1] == b"chunked":
                self._state = _State.CHUNK_SIZE
                self.keep_alive = not close and not lengths
            else:
                self._state = _State.UNTIL_CLOSE
            return
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
                raise BadResponse(f"a bad Content-Length: {b', '.join(lengths)[:80]!r}")
            self._left = int(lengths[0])
            self._state = _State.LENGTH if self._left else _State.DONE
            self.keep_alive = not close
            return
        self._state = _State.UNTIL_CLOSE

    # -- bodies --------------------------------------------------------------------------

    def _length(self) -> Event:
        buf = self._buf
        if not buf:
            if self._eof:
                raise BadResponse(f"the connection closed {self._left} bytes before the end")
            return NEED_DATA
        left = self._left
        if len(buf) <= left:
            self._buf = b""
            data = buf
        else:
            data, self._buf = buf[:left], buf[left:]
        self._left = left - len(data)
        if not self._left:
            self._state = _State.DONE
            self.keep_alive = self.keep_alive and not self._buf
        return data

    def _after_end(self) -> Ended:
        self._state = _State.DONE
        self.keep_alive = self.keep_alive and not self._buf
        return END

    def _chunked(self) -> Event:
        while True:
            state, buf = self._state, self._buf
            if state is _State.CHUNK_DATA:
                if not buf:
                    break
                left = self._left
                data, self._buf = (buf, b"") if len(buf) <= left else (buf[:left], buf[left:])
                self._left = left - len(data)
                if not self._left:
                    self._state = _State.CHUNK_CRLF
                return data
            if state is _State.CHUNK_CRLF:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise BadResponse("a chunk not followed by CRLF")
                self._buf = buf[2:]
                self._state = _State.CHUNK_SIZE
                continue
            if state is _State.DONE:
                return END
            line = self._line()
            if line is None:
                break
            if state is _State.TRAILERS:
                if not line:
                    return self._after_end()
                continue  # trailers are not passed on
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise BadResponse(f"a bad chunk-size line: {line[:80]!r}")
            size = int(match.group(1), 16)
            if size:
                self._left = size
                self._state = _State.CHUNK_DATA
            else:
                self._state = _State.TRAILERS
        if self._eof:
            raise BadResponse("the connection closed inside a chunked body")
        return NEED_DATA

    def _line(self) -> bytes | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > MAX_CHUNK_LINE:
                raise BadResponse("a chunk-size or trailer line too long")
            return None
        if end > MAX_CHUNK_LINE:
            raise BadResponse("a chunk-size or trailer line too long")
        line, self._buf = self._buf[:end], self._buf[end + 2 :]
        return line
