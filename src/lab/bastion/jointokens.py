"""The labd join token an install hands its agent: what it is bound to and how long it lives.

A joined bastion asks labd for one token per install script it serves (``install.ks``): one
use, bound to the machine's hostname and to the hardware identity its discovery reported (DMI
system UUID and serial), ``replace`` only for a reprovision an operator asked for, living
``join_ttl`` (2 h by default). The token's labd id is kept in the machine's settings under
:data:`JOIN_TOKEN_ID` while the install is in progress (:func:`token_live`); when the machine
leaves those states (enrolled, failed, forgotten, queued again) or a new install script
replaces it, the bastion revokes it at labd.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from attrs import frozen

from lab.model import Machine, MachineState

LIVE_TOKEN_STATES = (MachineState.INSTALLING, MachineState.INSTALLED)
"""While a machine is in one of these states its install's join token stays valid: the agent
enrolls on the first boot after the install. Any other state ends the token, but for a failure
only the phase watchdog saw (see :func:`token_live`)."""


def token_live(machine: Machine) -> bool:
    """Whether the install of ``machine`` may still enroll with its join token.

    A failure the phase watchdog declared is only a missed deadline: the install may still be
    running, and its next callback revives it, so its token lives on (until its TTL).
    """
    if machine.state in LIVE_TOKEN_STATES:
        return True
    return machine.state is MachineState.FAILED and bool(machine.settings.get("failed_by"))


JOIN_TOKEN_ID = "join_token_id"  # noqa: S105 - a settings key
"""Settings key: labd's id of the live join token of this machine's install, if any."""


@frozen(kw_only=True)
class TokenBinding:
    """What an install's agent join token may enroll: this name, on this hardware.

    ``system_uuid`` and ``serial`` come from the machine's discovery inventory (None when it
    was never discovered or the firmware reported nothing); ``replace`` lets the token take
    over the existing server of that name (a reprovision an operator asked for).
    """

    hostname: str
    system_uuid: str | None = None
    serial: str | None = None
    replace: bool = False


@frozen(kw_only=True)
class AgentToken:
    """A join token handed to one install; ``id`` is None when it cannot be revoked."""

    token: str
    id: str | None = None


class JoinTokenSource(Protocol):
    """Where agent join tokens come from (labd, when the bastion is joined to one)."""

    async def create_agent_token(self, binding: TokenBinding, ttl: timedelta) -> AgentToken: ...

    async def revoke_agent_token(self, token_id: str) -> None: ...


@frozen
class StaticTokenSource:
    """Hands out one fixed token: for a labd that accepts a reusable agent token."""

    token: str

    async def create_agent_token(self, binding: TokenBinding, ttl: timedelta) -> AgentToken:
        return AgentToken(token=self.token)

    async def revoke_agent_token(self, token_id: str) -> None:
        """Nothing to revoke: the static token is not this bastion's to end."""


def binding_of(machine: Machine) -> TokenBinding:
    """The binding of an install's join token, from the machine's row and inventory."""
    if not machine.hostname:
        raise ValueError("a machine without a hostname is not installed")
    found = machine.inventory.get("system") if machine.inventory else None
    system = found if isinstance(found, dict) else {}

    def hardware(key: str) -> str | None:
        value = system.get(key)
        return value.strip() if isinstance(value, str) and value.strip() else None

    return TokenBinding(
        hostname=machine.hostname,
        system_uuid=hardware("uuid"),
        serial=hardware("serial"),
        replace=bool(machine.settings.get("reprovision")),
    )


__all__ = [
    "JOIN_TOKEN_ID",
    "LIVE_TOKEN_STATES",
    "AgentToken",
    "JoinTokenSource",
    "StaticTokenSource",
    "TokenBinding",
    "binding_of",
    "token_live",
]
