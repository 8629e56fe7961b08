"""What the request fronts below hypercorn share (the bastion's ``/dispatch``, labd's agent
WebSocket and ``GET /k8s``): the answer that a connection is hypercorn's, and the ``date``
header an answer carries."""

from __future__ import annotations

import enum
import re
import time
from email.utils import formatdate
from typing import Final


class HandOff(enum.Enum):
    """A request a front does not take: the connection goes to hypercorn."""

    HAND_OFF = enum.auto()


HAND_OFF: Final = HandOff.HAND_OFF

# One header line (RFC 9110): a token name; a value of visible characters, spaces, tabs and
# obs-text, without the spaces around it.
FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*\r\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")


def head_end(buf: bytes | bytearray, max_head: int) -> int | HandOff | None:
    """Where the request head at the start of ``buf`` ends (the index of its blank line);
    :data:`HAND_OFF` when a front cannot take it (longer than ``max_head``, or a line ended by
    a bare LF, which h11 accepts but which would never end the head here); ``None`` while it
    has not ended yet."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return HAND_OFF if len(buf) >= max_head or _BARE_LF.search(buf) else None
    return HAND_OFF if end + 4 > max_head else end


class HttpDate:
    """The ``date`` header's value, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


__all__ = ["FIELD", "HAND_OFF", "HandOff", "HttpDate", "head_end"]
