"""The standalone lab-agent: this box enrolled as an agent of the configured labd, and
``lab-agent run`` in the background with its pid and log file in the agent's state directory
(``LAB_AGENT_STATE_DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from lab import pki
from lab.agent.cli import gather_facts
from lab.agent.identity import AGENT_FILE, STATE_DIR_ENV, default_state_dir, read_agent_file
from lab.agent.identity import enroll as enroll_agent
from lab.client.api import LOGIN_HINT, LabClient
from lab.client.contexts import identity_dir
from lab.client.credentials import load_credentials
from lab.errors import LabError
from lab.local.daemonize import Standalone, require_started

# Long enough to enroll right away, short enough that a leaked token is soon useless.
TOKEN_TTL_SECONDS = 600


def standalone() -> Standalone:
    """The local agent: ``lab-agent run`` with its pid and log file in its state directory."""
    return Standalone(
        name="lab-agent",
        module="lab.agent.main",
        data_dir=default_state_dir(),
        data_env=STATE_DIR_ENV,
    )


def enrolled(state: Path) -> dict[str, Any] | None:
    """The agent's ``agent.yaml`` when this box is enrolled, else None."""
    if not (state / AGENT_FILE).is_file():
        return None
    return read_agent_file(state)


def trusted_fingerprint() -> str:
    """The fingerprint of labd's CA as the user's own ``ca.pem`` (from ``labctl login``) has it."""
    creds = load_credentials(identity_dir(), hint=LOGIN_HINT)
    return pki.load_ca_bundle(creds.ca_pem)[0].fingerprint()


async def enroll(server: str, name: str, state: Path) -> dict[str, Any]:
    """Create a one-time agent token with the user's identity and enroll ``name`` with it.

    Enrollment runs in this process (the code ``lab-agent enroll`` runs) so the token never
    appears in a process list.
    """
    async with LabClient.from_settings() as client:
        record = await client.post(
            "/api/tokens",
            {
                "kind": "agent",
                "hostname": name,
                "ttl_seconds": TOKEN_TTL_SECONDS,
                "description": f"labctl init agent standalone ({name})",
            },
        )
    identity = await enroll_agent(
        server,
        str(record["token"]),
        hostname=name,
        facts=gather_facts(),
        ca_fingerprint=trusted_fingerprint(),
        tofu=False,
        state_dir=state,
    )
    return {"server": identity.server, "server_name": identity.server_name}


async def server_status(name: str) -> str | None:
    """``online``/``offline`` as labd sees server ``name``; None when labd cannot tell us."""
    try:
        async with LabClient.from_settings() as client:
            item = await client.get(f"/api/servers/{quote(name, safe='')}")
    except LabError:
        return None
    status = item.get("status") if isinstance(item, dict) else None
    return status if isinstance(status, str) else None


async def wait_online(name: str, pid: int, log_file: Path) -> None:
    """Return once labd sees ``name`` online; raises Unavailable if the agent exits first.

    Polls until then: bound it with ``trio.move_on_after``.
    """
    while True:
        require_started(pid, log_file)
        if await server_status(name) == "online":
            return
        await trio.sleep(0.2)
