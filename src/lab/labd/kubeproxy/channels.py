"""Reading an exec session's exit status off the bytes the proxy passes through: pure.

The proxy never re-frames a stream; it only watches the API server's side of a
``v4.channel.k8s.io``/``v5.channel.k8s.io`` WebSocket for the one message on channel 3 (the
error channel), a ``Status`` that says how the command ended. :class:`StatusScanner` follows
the frame boundaries in the bytes it is fed and keeps at most :data:`MAX_STATUS` bytes of that
message; everything else is counted and skipped. SPDY streams are not read (their headers are
compressed statefully); their sessions end without an exit status.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field

CHANNEL_PROTOCOLS = frozenset({b"v4.channel.k8s.io", b"v5.channel.k8s.io"})
ERROR_CHANNEL = 3
MAX_STATUS = 64 * 1024


@define
class StatusScanner:
    """Feed it the server→client bytes of a channel WebSocket; :attr:`status` then holds the
    error channel's message once one arrived whole."""

    _buffer: bytearray = field(factory=bytearray)
    _skip: int = 0
    _collect: int = 0
    _message: bytearray = field(factory=bytearray)
    status: bytes | None = None
    broken: bool = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.broken and self.status is None:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
            elif self._collect:
                step = min(self._collect, len(view))
                self._message += view[:step]
                self._collect -= step
                view = view[step:]
                if not self._collect:
                    self.status = bytes(self._message)
            else:
                self._buffer += view
                view = memoryview(self._next_frame() or b"")

    def _next_frame(self) -> bytes | None:
        """Parse the frame header at the start of the buffer; the bytes after it (None when
        the header is not whole yet)."""
        head = self._buffer
        if len(head) < 2:
            return None
        opcode = head[0] & 0x0F
        length = head[1] & 0x7F
        offset = 2
        if length == 126:
            if len(head) < 4:
                return None
            length, offset = int.from_bytes(head[2:4], "big"), 4
        elif length == 127:
            if len(head) < 10:
                return None
            length, offset = int.from_bytes(head[2:10], "big"), 10
        if head[1] & 0x80:  # a server never masks: this is not what we think it is
            self.broken = True
            return None
        binary = opcode == 0x2 and length >= 1
        if binary and len(head) <= offset:
            return None  # the channel byte is needed
        rest = bytes(head[offset:])
        self._buffer = bytearray()
        if binary and rest[0] == ERROR_CHANNEL and length <= MAX_STATUS:
            self._message = bytearray()
            self._collect = length - 1
            if not self._collect:
                self.status = b""
            return rest[1:]
        self._skip = length
        return rest


def exit_status(status: bytes | None) -> tuple[int | None, str]:
    """The exit code and message of an error-channel ``Status`` (0 for Success; None when
    there is none or it names no code)."""
    if status is None:
        return None, ""
    if not status.strip():
        return 0, ""
    try:
        doc: Any = json.loads(status)
    except ValueError:
        return None, status[:200].decode("utf-8", "replace")
    if not isinstance(doc, dict):
        return None, ""
    if doc.get("status") == "Success":
        return 0, ""
    message = str(doc.get("message", ""))[:200]
    causes = (doc.get("details") or {}).get("causes") or []
    for cause in causes:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                return int(str(cause.get("message"))), message
            except ValueError:
                break
    return None, message
