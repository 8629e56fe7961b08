"""Agent enrollment as one transaction, the same SQL on both backends.

Consuming the token, creating the server (or taking it over), recording the new certificate,
revoking the server's other certificates and updating the agent row either all happen or none
does: a refused enrollment (the name is taken and the token may not replace it) leaves the
token unused. Each backend runs :func:`enroll_agent` inside its own transaction; the only
dialect difference is the placeholder, so statements are written with ``?`` and converted.
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

from typing import Any, Protocol

from lab.errors import Conflict
from lab.model import Agent, AgentEnrollment, EnrolledAgent, Server
from lab.store.rows import AGENT_SELECT, CERT_COLS, JOIN_TOKENS_COLS, SERVER_COLS, RowCodec
from lab.store.rules import token_refusal


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class _Conn(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


def server_exists(name: str) -> Conflict:
    return Conflict(
        f"server {name!r} already exists; taking it over needs a token minted for it with replace",
        details={
            "reason": "server_exists",
            "name": name,
            "hint": f"labctl tokens create --kind agent --hostname {name} --replace",
        },
    )


def enroll_agent(
    conn: _Conn, plan: AgentEnrollment, codec: RowCodec, placeholder: str = "?"
) -> EnrolledAgent:
    """Run the enrollment's statements on ``conn`` (inside the caller's transaction).

    Raises ``Unauthenticated`` (the token is expired, revoked or used up) and ``Conflict``
    (reason ``server_exists``) before anything is written that the caller would keep.
    """

    def q(sql: str) -> str:
        return sql if placeholder == "?" else sql.replace("?", placeholder)

    def one(sql: str, params: tuple[Any, ...]) -> Any:
        cur: _Cursor = conn.execute(q(sql), params)
        return cur.fetchone()

    at = codec.time(plan.at)
    token = one(
        "UPDATE join_tokens SET uses = uses + 1"
        " WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND ("
        "  (reusable = TRUE AND (max_uses IS NULL OR uses < max_uses))"
        "  OR (reusable = FALSE AND uses = 0))"
        f" RETURNING {JOIN_TOKENS_COLS}",
        (plan.token_id, at),
    )
    if token is None:
        row = one(f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens WHERE id = ?", (plan.token_id,))
        raise token_refusal(None if row is None else codec.token(row), plan.at)
    row = one(f"SELECT {SERVER_COLS} FROM servers WHERE name = ?", (plan.name,))
    revoked = []
    if row is None:
        server = Server(name=plan.name, facts=plan.facts, created_at=plan.at)
        conn.execute(
            q(f"INSERT INTO servers ({SERVER_COLS}) VALUES (?, ?, ?, ?, ?)"),
            codec.server_params(server),
        )
    elif not plan.replace:
        raise server_exists(plan.name)
    else:
        server = codec.server(row)
        conn.execute(
            q("UPDATE servers SET facts = ? WHERE id = ?"), (codec.json(plan.facts), server.id)
        )
        cur: _Cursor = conn.execute(
            q(
                "UPDATE certificates SET revoked_at = ?"
                " WHERE subject = ? AND revoked_at IS NULL"
                f" RETURNING {CERT_COLS}"
            ),
            (at, f"server/{plan.name}"),
        )
        revoked = sorted((codec.cert(r) for r in cur.fetchall()), key=lambda c: c.serial)
    conn.execute(
        q(f"INSERT INTO certificates ({CERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"),
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
    conn.execute(
        q(
            "INSERT INTO agents (id, server_id, cert_serial, version, enrollment)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET"
            " id = excluded.id, cert_serial = excluded.cert_serial,"
            " version = excluded.version, enrollment = excluded.enrollment"
        ),
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
