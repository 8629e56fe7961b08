"""Agent enrollment as one transaction, the same SQL on both backends.

Consuming the token, creating the server (or taking it over), recording the new certificate,
revoking the server's other certificates and updating the agent row either all happen or none
does: a refused enrollment (the name is taken and the token may not replace it) leaves the
token unused. The shared agents repository runs :func:`enroll_agent` as one write of its
backend (lab.store.sql); the token is consumed by the same conditional UPDATE as
``TokenRepository.consume``.
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

from lab.errors import Conflict
from lab.model import Agent, AgentEnrollment, EnrolledAgent, Server
from lab.store.rows import AGENT_SELECT, CERT_COLS, JOIN_TOKENS_COLS, SERVER_COLS
from lab.store.rules import token_refusal
from lab.store.sql.dialect import Tx
from lab.store.sql.identity import CONSUME_TOKEN


def server_exists(name: str) -> Conflict:
    return Conflict(
        f"server {name!r} already exists; taking it over needs a token minted for it with replace",
        details={
            "reason": "server_exists",
            "name": name,
            "hint": f"labctl tokens create --kind agent --hostname {name} --replace",
        },
    )


def enroll_agent(tx: Tx, plan: AgentEnrollment) -> EnrolledAgent:
    """Run the enrollment's statements in ``tx`` (the caller's transaction).

    Raises ``Unauthenticated`` (the token is expired, revoked or used up) and ``Conflict``
    (reason ``server_exists``) before anything is written that the caller would keep.
    """
    codec = tx.dialect.codec
    one = tx.one
    at = codec.time(plan.at)
    token = one(CONSUME_TOKEN, (plan.token_id, at))
    if token is None:
        row = one(f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens WHERE id = ?", (plan.token_id,))
        raise token_refusal(None if row is None else codec.token(row), plan.at)
    row = one(f"SELECT {SERVER_COLS} FROM servers WHERE name = ?", (plan.name,))
    revoked = []
    if row is None:
        server = Server(name=plan.name, facts=plan.facts, created_at=plan.at)
        tx.run(
            f"INSERT INTO servers ({SERVER_COLS}) VALUES (?, ?, ?, ?, ?)",
            codec.server_params(server),
        )
    elif not plan.replace:
        raise server_exists(plan.name)
    else:
        server = codec.server(row)
        tx.run("UPDATE servers SET facts = ? WHERE id = ?", (codec.json(plan.facts), server.id))
        rows = tx.all(
            "UPDATE certificates SET revoked_at = ?"
            " WHERE subject = ? AND revoked_at IS NULL"
            f" RETURNING {CERT_COLS}",
            (at, f"server/{plan.name}"),
        )
        revoked = sorted((codec.cert(r) for r in rows), key=lambda c: c.serial)
    tx.run(
        f"INSERT INTO certificates ({CERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        codec.cert_params(plan.cert),
    )
    trace = {
        **plan.trace,
        "mode": "new" if row is None else "replace",
        "replaced_serials": [c.serial for c in revoked],
    }
    agent = Agent(
        server_id=server.id,
        cert_serial=plan.cert.serial,
        version=plan.agent_version,
        enrollment=trace,
    )
    tx.run(
        "INSERT INTO agents (id, server_id, cert_serial, version, enrollment)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET"
        " id = excluded.id, cert_serial = excluded.cert_serial,"
        " version = excluded.version, enrollment = excluded.enrollment",
        codec.agent_params(agent),
    )
    server_row = one(f"SELECT {SERVER_COLS} FROM servers WHERE id = ?", (server.id,))
    agent_row = one(f"{AGENT_SELECT} WHERE a.server_id = ?", (server.id,))
    return EnrolledAgent(
        server=codec.server(server_row),
        agent=codec.agent(agent_row),
        replaced=row is not None,
        revoked=tuple(revoked),
    )
