"""Protocol errors and the WebSocket close codes they map to."""

from __future__ import annotations

import enum
from typing import Any

from lab.errors import Invalid


class CloseCode(enum.IntEnum):
    """WebSocket close codes used on labctl's connections.

    1000-1011 are RFC 6455 codes; 4000-4999 are the application range, ours start at 4000.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    HEARTBEAT_TIMEOUT = 4000
    UNKNOWN_STREAM = 4001
    FLOW_CONTROL = 4002
    SEQUENCE = 4003
    REPLACED = 4004
    REVOKED = 4005
    DUPLICATE_SESSION = 4006


class ProtocolError(Invalid):
    """A peer broke the wire protocol; the connection closes with :attr:`close_code`.

    Only the offending connection is closed; other sessions are unaffected.
    """

    code = "protocol_error"

    def __init__(
        self,
        message: str,
        *,
        close_code: CloseCode = CloseCode.PROTOCOL_ERROR,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details={"close_code": int(close_code), **(details or {})})
        self.close_code = close_code
