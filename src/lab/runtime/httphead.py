"""What the request fronts below hypercorn share (the bastion's ``/dispatch``, labd's agent
WebSocket and ``GET /k8s``): the answer that a connection is hypercorn's, and the ``date``
header an answer carries."""

from __future__ import annotations

import enum
import time
from email.utils import formatdate
from typing import Final


class HandOff(enum.Enum):
    """A request a front does not take: the connection goes to hypercorn."""

    HAND_OFF = enum.auto()


HAND_OFF: Final = HandOff.HAND_OFF


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


__all__ = ["HAND_OFF", "HandOff", "HttpDate"]
