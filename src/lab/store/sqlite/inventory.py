"""SQLite repositories of the fleet: servers, agents (+ presence leases), machines, clusters,
settings."""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lab.errors import Conflict, NotFound
from lab.model import Agent, Cluster, Machine, MachineState, Server
from lab.store.sqlite.db import Database, dumps, loads, opt_parse_ts, parse_ts, transaction, ts
from lab.store.sqlite.writes import Heartbeat, Writer

# --- servers -------------------------------------------------------------------------------

_SERVER_COLS = "id, name, labels, facts, created_at"


def _server(row: sqlite3.Row | tuple[Any, ...]) -> Server:
    return Server(
        id=row[0],
        name=row[1],
        labels=loads(row[2]),
        facts=loads(row[3]),
        created_at=parse_ts(row[4]),
    )


def _server_where(conn: sqlite3.Connection, where: str, key: str, what: str) -> Server:
    row = conn.execute(f"SELECT {_SERVER_COLS} FROM servers WHERE {where} = ?", (key,)).fetchone()
    if row is None:
        raise NotFound(f"server {what} {key!r} not found", details={"resource": f"server/{key}"})
    return _server(row)


class SqliteServers:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, server: Server) -> Server:
        def op(conn: sqlite3.Connection) -> Server:
            try:
                with transaction(conn):
                    conn.execute(
                        f"INSERT INTO servers ({_SERVER_COLS}) VALUES (?, ?, ?, ?, ?)",
                        (
                            server.id,
                            server.name,
                            dumps(server.labels),
                            dumps(server.facts),
                            ts(server.created_at),
                        ),
                    )
            except sqlite3.IntegrityError as exc:
                raise Conflict(
                    f"server {server.name!r} already exists", details={"name": server.name}
                ) from exc
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
                f"SELECT {_SERVER_COLS} FROM servers {where} ORDER BY name", params
            ).fetchall()
            return [_server(r) for r in rows]

        return await self._db.run(op)

    async def set_labels(self, name: str, set_: dict[str, str], remove: Sequence[str]) -> Server:
        def op(conn: sqlite3.Connection) -> Server:
            with transaction(conn):
                server = _server_where(conn, "name", name, "named")
                labels = {k: v for k, v in server.labels.items() if k not in set(remove)}
                labels.update(set_)
                conn.execute(
                    "UPDATE servers SET labels = ? WHERE id = ?", (dumps(labels), server.id)
                )
            return _server_where(conn, "id", server.id, "id")

        return await self._db.run(op)

    async def set_facts(self, server_id: str, facts: dict[str, Any]) -> Server:
        def op(conn: sqlite3.Connection) -> Server:
            with transaction(conn):
                cur = conn.execute(
                    "UPDATE servers SET facts = ? WHERE id = ?", (dumps(facts), server_id)
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

_AGENT_SELECT = (
    "SELECT a.id, a.server_id, a.cert_serial, a.version, l.seen, l.replica"
    " FROM agents a LEFT JOIN agent_leases l ON l.server_id = a.server_id"
)


def _agent(row: tuple[Any, ...]) -> Agent:
    return Agent(
        id=row[0],
        server_id=row[1],
        cert_serial=row[2],
        version=row[3],
        last_seen=opt_parse_ts(row[4]),
        replica=row[5],
    )


def _agent_of(conn: sqlite3.Connection, server_id: str) -> Agent:
    row = conn.execute(f"{_AGENT_SELECT} WHERE a.server_id = ?", (server_id,)).fetchone()
    if row is None:
        raise NotFound(f"no agent for server id {server_id!r}")
    return _agent(row)


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
                        "INSERT INTO agents (id, server_id, cert_serial, version)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET"
                        " id = excluded.id, cert_serial = excluded.cert_serial,"
                        " version = excluded.version",
                        (agent.id, agent.server_id, agent.cert_serial, agent.version),
                    )
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"server id {agent.server_id!r} not found") from exc
            return _agent_of(conn, agent.server_id)

        return await self._db.run(op)

    async def get_by_server(self, server_id: str) -> Agent:
        return await self._db.run(_agent_of, server_id)

    async def list(self) -> list[Agent]:
        def op(conn: sqlite3.Connection) -> list[Agent]:
            rows = conn.execute(f"{_AGENT_SELECT} ORDER BY a.server_id").fetchall()
            return [_agent(r) for r in rows]

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

_MACHINE_COLS = (
    "mac, state, hostname, role, disk, inventory, settings, phase, message, updated_at, created_at"
)


def _machine(row: tuple[Any, ...]) -> Machine:
    return Machine(
        mac=row[0],
        state=MachineState(row[1]),
        hostname=row[2],
        role=row[3],
        disk=row[4],
        inventory=loads(row[5]),
        settings=loads(row[6]),
        phase=row[7],
        message=row[8],
        updated_at=parse_ts(row[9]),
        created_at=parse_ts(row[10]),
    )


def _machine_of(conn: sqlite3.Connection, mac: str) -> Machine:
    row = conn.execute(f"SELECT {_MACHINE_COLS} FROM machines WHERE mac = ?", (mac,)).fetchone()
    if row is None:
        raise NotFound(f"machine {mac!r} not found", details={"resource": f"machine/{mac}"})
    return _machine(row)


class SqliteMachines:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, machine: Machine) -> Machine:
        """Insert or replace; ``created_at`` of an existing machine is kept."""

        def op(conn: sqlite3.Connection) -> Machine:
            m = machine
            with transaction(conn):
                conn.execute(
                    f"INSERT INTO machines ({_MACHINE_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET"
                    " state = excluded.state, hostname = excluded.hostname,"
                    " role = excluded.role, disk = excluded.disk,"
                    " inventory = excluded.inventory, settings = excluded.settings,"
                    " phase = excluded.phase, message = excluded.message,"
                    " updated_at = excluded.updated_at",
                    (
                        m.mac,
                        m.state.value,
                        m.hostname,
                        m.role,
                        m.disk,
                        dumps(m.inventory),
                        dumps(m.settings),
                        m.phase,
                        m.message,
                        ts(m.updated_at),
                        ts(m.created_at),
                    ),
                )
            return _machine_of(conn, m.mac)

        return await self._db.run(op)

    async def get(self, mac: str) -> Machine:
        return await self._db.run(_machine_of, mac)

    async def list(self, *, state: MachineState | None = None) -> list[Machine]:
        def op(conn: sqlite3.Connection) -> list[Machine]:
            if state is None:
                rows = conn.execute(f"SELECT {_MACHINE_COLS} FROM machines ORDER BY mac")
            else:
                rows = conn.execute(
                    f"SELECT {_MACHINE_COLS} FROM machines WHERE state = ? ORDER BY mac",
                    (state.value,),
                )
            return [_machine(r) for r in rows.fetchall()]

        return await self._db.run(op)

    async def delete(self, mac: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if conn.execute("DELETE FROM machines WHERE mac = ?", (mac,)).rowcount == 0:
                    raise NotFound(f"machine {mac!r} not found")

        await self._db.run(op)


# --- clusters -------------------------------------------------------------------------------


def _cluster_of(conn: sqlite3.Connection, name: str) -> Cluster:
    row = conn.execute(
        "SELECT id, name, description, created_at FROM clusters WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        raise NotFound(f"cluster {name!r} not found", details={"resource": f"cluster/{name}"})
    return Cluster(id=row[0], name=row[1], description=row[2], created_at=parse_ts(row[3]))


class SqliteClusters:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, cluster: Cluster) -> Cluster:
        def op(conn: sqlite3.Connection) -> Cluster:
            try:
                with transaction(conn):
                    conn.execute(
                        "INSERT INTO clusters (id, name, description, created_at)"
                        " VALUES (?, ?, ?, ?)",
                        (cluster.id, cluster.name, cluster.description, ts(cluster.created_at)),
                    )
            except sqlite3.IntegrityError as exc:
                raise Conflict(
                    f"cluster {cluster.name!r} already exists", details={"name": cluster.name}
                ) from exc
            return _cluster_of(conn, cluster.name)

        return await self._db.run(op)

    async def get(self, name: str) -> Cluster:
        return await self._db.run(_cluster_of, name)

    async def list(self) -> list[Cluster]:
        def op(conn: sqlite3.Connection) -> list[Cluster]:
            rows = conn.execute(
                "SELECT id, name, description, created_at FROM clusters ORDER BY name"
            ).fetchall()
            return [
                Cluster(id=r[0], name=r[1], description=r[2], created_at=parse_ts(r[3]))
                for r in rows
            ]

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
