"""Live user WebSocket sessions (``/ws/exec``, ``/ws/logs``), so revocation can end them.

Each handler registers the cancel scope that owns its relays for as long as it runs. When a
certificate is revoked (here, or on another replica:
:class:`lab.labd.identity.identities.Revocations` listeners hear about both) or a user is
disabled, the matching sessions are cancelled; leaving the relays' ``agent_stream`` blocks
kills their remote process groups, and the handler closes the WebSocket with
:attr:`lab.proto.CloseCode.REVOKED` and the session's :attr:`reason`.

Listeners run synchronously inside the revoking call, so a session is cancelled before the
revoke request answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio
from attrs import define, field

if TYPE_CHECKING:
    from lab.model import Certificate

log = logging.getLogger(__name__)

REVOKED = "revoked"
DISABLED = "disabled"


@define(eq=False)
class UserSession:
    """One live user WebSocket: whose certificate it runs on and the scope that owns it."""

    serial: str
    user: str
    scope: trio.CancelScope
    # Why labd ended the session (``revoked``, ``disabled``); None while it runs or if it
    # ended by itself.
    reason: str | None = None

    def close(self, reason: str) -> None:
        """Cancel the session's scope; the first reason given is the one reported."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


@define
class UserSessions:
    """The registry of live user sessions on this replica."""

    _live: set[UserSession] = field(factory=set)

    def __len__(self) -> int:
        return len(self._live)

    @contextmanager
    def session(self, *, serial: str, user: str, scope: trio.CancelScope) -> Iterator[UserSession]:
        """Register ``scope`` as the session of ``user``'s certificate ``serial`` while the
        block runs; it is forgotten on the way out, whatever ends it."""
        entry = UserSession(serial=serial, user=user, scope=scope)
        self._live.add(entry)
        try:
            yield entry
        finally:
            self._live.discard(entry)

    def close_serial(self, serial: str, reason: str = REVOKED) -> int:
        """End every session running on certificate ``serial``; returns how many."""
        return self._close([s for s in self._live if s.serial == serial], reason)

    def close_user(self, user: str, reason: str = DISABLED) -> int:
        """End every session of ``user`` (whatever its certificate); returns how many."""
        return self._close([s for s in self._live if s.user == user], reason)

    def revoked(self, cert: Certificate) -> None:
        """A :class:`lab.labd.identity.identities.Revocations` listener."""
        self.close_serial(cert.serial, REVOKED)

    def _close(self, sessions: list[UserSession], reason: str) -> int:
        for entry in sessions:
            log.info(
                "closing a session of user/%s: %s (serial %s)", entry.user, reason, entry.serial
            )
            entry.close(reason)
        return len(sessions)
