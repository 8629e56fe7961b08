"""Connection-level limits of the daemons' HTTP servers, without I/O.

:class:`ConnectionLimits` holds the settings (timeouts, the per-address cap on unauthenticated
connections); :class:`ConnectionGuard` keeps the per-address counts and decides; the trio driver
is :class:`lab.runtime.tls_server.PeerCertTCPServer`. A connection is *unauthenticated* from
accept until its TLS handshake completes with a client certificate our CA signed; one without a
certificate (and every plain-HTTP connection) stays unauthenticated until it closes.

TLS handshake failures are counted and logged through :class:`BoundedLog`, at most one line per
interval with the number of failures it did not log, so a scanner cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from attrs import define, field, frozen

log = logging.getLogger("lab.runtime.connections")


@frozen(kw_only=True)
class ConnectionLimits:
    """What one listener allows each connection (every value > 0; 0 turns a limit off)."""

    # Seconds from accept to a finished TLS handshake.
    handshake_timeout: float = 10.0
    # Seconds a connection may wait for a request with none in flight: before its first one
    # and between keep-alive requests (hypercorn's keep_alive_timeout). WebSockets and
    # requests being answered are not idle.
    idle_timeout: float = 10.0
    # Concurrent unauthenticated connections one source address may hold (0: no limit).
    max_unauthenticated_per_address: int = 64


@frozen
class Refusal:
    """Why a connection was refused or dropped, for metrics labels (a small fixed set)."""

    reason: str


PER_ADDRESS_LIMIT = Refusal("per_address_limit")


@define
class BoundedLog:
    """Log one line per ``interval`` seconds at most, counting the lines it swallowed."""

    interval: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _next_at: float = field(default=float("-inf"), init=False)
    _suppressed: int = field(default=0, init=False)

    def emit(self, logger: logging.Logger, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line was logged less than ``interval`` ago."""
        now = self.clock()
        if now < self._next_at:
            self._suppressed += 1
            return False
        suppressed, self._suppressed = self._suppressed, 0
        self._next_at = now + self.interval
        if suppressed:
            logger.log(level, msg + " (%d more since the last line not logged)", *args, suppressed)
        else:
            logger.log(level, msg, *args)
        return True


@define
class ConnectionGuard:
    """Per-address counts of unauthenticated connections, and TLS failure accounting.

    ``on_refused(reason)`` and ``on_handshake_failure(reason)`` feed the daemon's metrics.
    """

    limits: ConnectionLimits = field(factory=ConnectionLimits)
    on_refused: Callable[[str], None] | None = None
    on_handshake_failure: Callable[[str], None] | None = None
    failure_log: BoundedLog = field(factory=BoundedLog)
    refusal_log: BoundedLog = field(factory=BoundedLog)
    _unauthenticated: dict[str, int] = field(factory=dict, init=False)

    def admit(self, address: str) -> bool:
        """Count a new unauthenticated connection from ``address``; False: refuse it."""
        cap = self.limits.max_unauthenticated_per_address
        held = self._unauthenticated.get(address, 0)
        if cap > 0 and held >= cap:
            if self.on_refused is not None:
                self.on_refused(PER_ADDRESS_LIMIT.reason)
            self.refusal_log.emit(
                log,
                logging.WARNING,
                "refused a connection from %s: it holds %d unauthenticated connections "
                "(max_unauthenticated_per_address)",
                address,
                held,
            )
            return False
        self._unauthenticated[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """The connection admitted for ``address`` authenticated or closed."""
        held = self._unauthenticated.get(address, 0) - 1
        if held > 0:
            self._unauthenticated[address] = held
        else:
            self._unauthenticated.pop(address, None)

    def unauthenticated(self, address: str | None = None) -> int:
        """Unauthenticated connections open from ``address``, or from everywhere."""
        if address is None:
            return sum(self._unauthenticated.values())
        return self._unauthenticated.get(address, 0)

    def handshake_failed(self, address: str, reason: str, error: str) -> None:
        """Count a TLS handshake that did not finish (``reason``: timeout or error)."""
        if self.on_handshake_failure is not None:
            self.on_handshake_failure(reason)
        self.failure_log.emit(
            log, logging.WARNING, "TLS handshake from %s failed: %s", address, error or reason
        )
