"""What one agent enrollment writes, and what it wrote: the records of the one transaction
that consumes the token, creates or takes over the server, records the certificate, revokes
the replaced ones and points the agent row at the new certificate."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from attrs import Factory, frozen

from lab.model.records import Agent, Certificate, Server


@frozen(kw_only=True)
class AgentEnrollment:
    token_id: str
    at: datetime
    name: str
    facts: dict[str, Any] = Factory(dict)
    # May take over an existing server of this name (a token minted with replace).
    replace: bool = False
    cert: Certificate
    agent_version: str = ""
    # Stored on the agent row with "mode" (new, replace) and "replaced_serials" added.
    trace: dict[str, Any] = Factory(dict)


@frozen(kw_only=True)
class EnrolledAgent:
    server: Server
    agent: Agent
    replaced: bool
    # Certificates of the server this enrollment revoked (a takeover), in serial order.
    revoked: tuple[Certificate, ...] = ()
