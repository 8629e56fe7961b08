"""SQLite repositories of the fleet: servers, agents (+ presence leases), machines, clusters,
settings."""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lab.errors import NotFound
from lab.model import Agent, AgentEnrollment, Cluster, EnrolledAgent, Machine, MachineState, Server
from lab.store.enrollment import enroll_agent
from lab.store.rows import AGENT_SELECT, CLUSTER_COLS, MACHINE_COLS, SERVER_COLS
from lab.store.rules import already_exists, merge_labels, not_found
from lab.store.sqlite.db import CODEC, Database, transaction, ts
from lab.store.writeops import Heartbeat, Writer

# --- servers -------------------------------------------------------------------------------


def _server_where(conn: sqlite3.Connection, where: str, key: str, what: str) -> Server:
    row = conn.execute(f"SELECT {SERVER_COLS} FROM servers WHERE {where} = ?", (key,)).fetchone()
    if row is None:
        raise not_found(f"server {what}", key, resource="server")
    return CODEC.server(row)


class SqliteServers:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, server: Server) -> Server:
        def op(conn: sqlite3.Connection) -> Server:
            try:
                with transaction(conn):
                    conn.execute(
                        f"INSERT INTO servers ({SERVER_COLS}) VALUES (?, ?, ?, ?, ?)",
                        CODEC.server_params(server),
                    )
            except sqlite3.IntegrityError as exc:
                raise already_exists("server", server.name) from exc
            return _server_where(conn, "id", server.id, "id")

        return await self._db.run(op)

    async def get(self, server_id: str) -> Server:
        return await self._db.run(_server_where, "id", server_id, "id")

    async def get_by_name(self, name: str) -> Server:
        return await self._db.run(_server_where, "name", name, "named")

    async def list(self, *, labels: dict[str, str] | None = None) -> list[Server]:
        def op(conn: sqlite3.Connection) -> list[Server]:
            # Label selectors run in SQL so a fleet of thousands is not shipped to Python.
            clauses, params = [], []
            for key, value in sorted((labels or {}).items()):
                # json_each, not a JSON path: a path would need quoting rules for the key.
                clauses.append(
                    "EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ? AND value = ?)"
                )
                params += [key, value]
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = conn.execute(
                f"SELECT {SERVER_COLS} FROM servers {where} ORDER BY name", params
            ).fetchall()
            return [CODEC.server(r) for r in rows]

        return await self._db.run(op)

    async def set_labels(self, name: str, set_: dict[str, str], remove: Sequence[str]) -> Server:
        def op(conn: sqlite3.Connection) -> Server:
            with transaction(conn):
                server = _server_where(conn, "name", name, "named")
                labels = merge_labels(server.labels, set_, remove)
                conn.execute(
                    "UPDATE servers SET labels = ? WHERE id = ?", (CODEC.json(labels), server.id)
                )
            return _server_where(conn, "id", server.id, "id")

        return await self._db.run(op)

    async def set_facts(self, server_id: str, facts: dict[str, Any]) -> Server:
        def op(conn: sqlite3.Connection) -> Server:
            with transaction(conn):
                cur = conn.execute(
                    "UPDATE servers SET facts = ? WHERE id = ?", (CODEC.json(facts), server_id)
                )
                if cur.rowcount == 0:
                    raise NotFound(f"server id {server_id!r} not found")
            return _server_where(conn, "id", server_id, "id")

        return await self._db.run(op)

    async def delete(self, name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if conn.execute("DELETE FROM servers WHERE name = ?", (name,)).rowcount == 0:
                    raise NotFound(f"server named {name!r} not found")

        await self._db.run(op)


# --- agents and presence leases -------------------------------------------------------------


def _agent_of(conn: sqlite3.Connection, server_id: str) -> Agent:
    row = conn.execute(f"{AGENT_SELECT} WHERE a.server_id = ?", (server_id,)).fetchone()
    if row is None:
        raise NotFound(f"no agent for server id {server_id!r}")
    return CODEC.agent(row)


class SqliteAgents:
    """Agent identities; ``last_seen``/``replica`` of the records come from the lease."""

    def __init__(self, db: Database, writer: Writer) -> None:
        self._db = db
        self._writer = writer

    async def upsert(self, agent: Agent) -> Agent:
        def op(conn: sqlite3.Connection) -> Agent:
            try:
                with transaction(conn):
                    conn.execute(
                        "INSERT INTO agents (id, server_id, cert_serial, version, enrollment)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET"
                        " id = excluded.id, cert_serial = excluded.cert_serial,"
                        " version = excluded.version, enrollment = excluded.enrollment",
                        CODEC.agent_params(agent),
                    )
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"server id {agent.server_id!r} not found") from exc
            return _agent_of(conn, agent.server_id)

        return await self._db.run(op)

    async def enroll(self, plan: AgentEnrollment) -> EnrolledAgent:
        def op(conn: sqlite3.Connection) -> EnrolledAgent:
            with transaction(conn):
                return enroll_agent(conn, plan, CODEC, "?")

        return await self._db.run(op)

    async def get_by_server(self, server_id: str) -> Agent:
        return await self._db.run(_agent_of, server_id)

    async def list(self) -> list[Agent]:
        def op(conn: sqlite3.Connection) -> list[Agent]:
            rows = conn.execute(f"{AGENT_SELECT} ORDER BY a.server_id").fetchall()
            return [CODEC.agent(r) for r in rows]

        return await self._db.run(op)

    async def heartbeat(
        self, server_id: str, *, replica: str, seen: datetime, lease_until: datetime
    ) -> None:
        await self._writer.submit(
            Heartbeat(server_id=server_id, replica=replica, seen=seen, lease_until=lease_until)
        )

    async def release(self, server_id: str, *, replica: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "DELETE FROM agent_leases WHERE server_id = ? AND replica = ?",
                    (server_id, replica),
                )

        await self._db.run(op)

    async def online(self, *, at: datetime) -> dict[str, str]:
        def op(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT server_id, replica FROM agent_leases WHERE lease_until > ?", (ts(at),)
            )
            return dict(rows.fetchall())

        return await self._db.run(op)


# --- machines -------------------------------------------------------------------------------


def _machine_of(conn: sqlite3.Connection, mac: str) -> Machine:
    row = conn.execute(f"SELECT {MACHINE_COLS} FROM machines WHERE mac = ?", (mac,)).fetchone()
    if row is None:
        raise not_found("machine", mac)
    return CODEC.machine(row)


class SqliteMachines:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, machine: Machine) -> Machine:
        """Insert or replace; ``created_at`` of an existing machine is kept."""

        def op(conn: sqlite3.Connection) -> Machine:
            with transaction(conn):
                conn.execute(
                    f"INSERT INTO machines ({MACHINE_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET"
                    " state = excluded.state, hostname = excluded.hostname,"
                    " role = excluded.role, disk = excluded.disk,"
                    " inventory = excluded.inventory, settings = excluded.settings,"
                    " phase = excluded.phase, message = excluded.message,"
                    " updated_at = excluded.updated_at",
                    CODEC.machine_params(machine),
                )
            return _machine_of(conn, machine.mac)

        return await self._db.run(op)

    async def get(self, mac: str) -> Machine:
        return await self._db.run(_machine_of, mac)

    async def list(self, *, state: MachineState | None = None) -> list[Machine]:
        def op(conn: sqlite3.Connection) -> list[Machine]:
            if state is None:
                rows = conn.execute(f"SELECT {MACHINE_COLS} FROM machines ORDER BY mac")
            else:
                rows = conn.execute(
                    f"SELECT {MACHINE_COLS} FROM machines WHERE state = ? ORDER BY mac",
                    (state.value,),
                )
            return [CODEC.machine(r) for r in rows.fetchall()]

        return await self._db.run(op)

    async def delete(self, mac: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if conn.execute("DELETE FROM machines WHERE mac = ?", (mac,)).rowcount == 0:
                    raise NotFound(f"machine {mac!r} not found")

        await self._db.run(op)


# --- clusters -------------------------------------------------------------------------------


def _cluster_of(conn: sqlite3.Connection, name: str) -> Cluster:
    row = conn.execute(f"SELECT {CLUSTER_COLS} FROM clusters WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise not_found("cluster", name)
    return CODEC.cluster(row)


class SqliteClusters:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, cluster: Cluster) -> Cluster:
        def op(conn: sqlite3.Connection) -> Cluster:
            try:
                with transaction(conn):
                    conn.execute(
                        f"INSERT INTO clusters ({CLUSTER_COLS}) VALUES (?, ?, ?, ?)",
                        CODEC.cluster_params(cluster),
                    )
            except sqlite3.IntegrityError as exc:
                raise already_exists("cluster", cluster.name) from exc
            return _cluster_of(conn, cluster.name)

        return await self._db.run(op)

    async def get(self, name: str) -> Cluster:
        return await self._db.run(_cluster_of, name)

    async def list(self) -> list[Cluster]:
        def op(conn: sqlite3.Connection) -> list[Cluster]:
            rows = conn.execute(f"SELECT {CLUSTER_COLS} FROM clusters ORDER BY name")
            return [CODEC.cluster(r) for r in rows.fetchall()]

        return await self._db.run(op)

    async def delete(self, name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if conn.execute("DELETE FROM clusters WHERE name = ?", (name,)).rowcount == 0:
                    raise NotFound(f"cluster {name!r} not found")

        await self._db.run(op)


# --- settings -------------------------------------------------------------------------------


class SqliteSettings:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._db.run(op)

    async def set(self, key: str, value: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

        await self._db.run(op)

    async def set_if_absent(self, key: str, value: str) -> str:
        def op(conn: sqlite3.Connection) -> str:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    (key, value),
                )
                (stored,) = conn.execute(
                    "SELECT value FROM settings WHERE key = ?", (key,)
                ).fetchone()
            return str(stored)

        return await self._db.run(op)
