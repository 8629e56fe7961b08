"""Repositories of the fleet: servers, agents (+ presence leases), machines, clusters,
settings."""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from lab.errors import NotFound
from lab.model import (
    Agent,
    AgentEnrollment,
    Cluster,
    EnrolledAgent,
    JoinToken,
    Machine,
    MachineState,
    Server,
)
from lab.store.enrollment import enroll_agent
from lab.store.rows import AGENT_SELECT, CLUSTER_COLS, MACHINE_COLS, SERVER_COLS
from lab.store.rules import already_exists, merge_labels, not_found
from lab.store.sql.dialect import Runner, Tx
from lab.store.sql.identity import find_token
from lab.store.writeops import Heartbeat, Writer

# --- servers -------------------------------------------------------------------------------


def _server_where(tx: Tx, where: str, key: str, what: str) -> Server:
    row = tx.one(f"SELECT {SERVER_COLS} FROM servers WHERE {where} = ?", (key,))
    if row is None:
        raise not_found(f"server {what}", key, resource="server")
    return tx.dialect.codec.server(row)


class Servers:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def create(self, server: Server) -> Server:
        def op(tx: Tx) -> Server:
            try:
                tx.run(
                    f"INSERT INTO servers ({SERVER_COLS}) VALUES (?, ?, ?, ?, ?)",
                    tx.dialect.codec.server_params(server),
                )
            except tx.dialect.unique_violation as exc:
                raise already_exists("server", server.name) from exc
            return _server_where(tx, "id", server.id, "id")

        return await self._db.write(op)

    async def get(self, server_id: str) -> Server:
        return await self._db.read(_server_where, "id", server_id, "id")

    async def get_by_name(self, name: str) -> Server:
        return await self._db.read(_server_where, "name", name, "named")

    async def list(self, *, labels: dict[str, str] | None = None) -> list[Server]:
        def op(tx: Tx) -> list[Server]:
            # Label selectors run in SQL so a fleet of thousands is not shipped to Python.
            where, params = tx.dialect.labels_match(labels) if labels else ("", ())
            rows = tx.all(
                f"SELECT {SERVER_COLS} FROM servers"
                + (f" WHERE {where}" if where else "")
                + " ORDER BY name",
                params,
            )
            return [tx.dialect.codec.server(r) for r in rows]

        return await self._db.read(op)

    async def set_labels(self, name: str, set_: dict[str, str], remove: Sequence[str]) -> Server:
        def op(tx: Tx) -> Server:
            server = _server_where(tx, "name", name, "named")
            labels = merge_labels(server.labels, set_, remove)
            tx.run(
                "UPDATE servers SET labels = ? WHERE id = ?",
                (tx.dialect.codec.json(labels), server.id),
            )
            return _server_where(tx, "id", server.id, "id")

        return await self._db.write(op)

    async def set_facts(self, server_id: str, facts: dict[str, Any]) -> Server:
        def op(tx: Tx) -> Server:
            touched = tx.run(
                "UPDATE servers SET facts = ? WHERE id = ?",
                (tx.dialect.codec.json(facts), server_id),
            )
            if touched == 0:
                raise NotFound(f"server id {server_id!r} not found")
            return _server_where(tx, "id", server_id, "id")

        return await self._db.write(op)

    async def delete(self, name: str) -> None:
        def op(tx: Tx) -> None:
            if tx.run("DELETE FROM servers WHERE name = ?", (name,)) == 0:
                raise NotFound(f"server named {name!r} not found")

        await self._db.write(op)


# --- agents and presence leases -------------------------------------------------------------


def _agent_of(tx: Tx, server_id: str) -> Agent:
    row = tx.one(f"{AGENT_SELECT} WHERE a.server_id = ?", (server_id,))
    if row is None:
        raise NotFound(f"no agent for server id {server_id!r}")
    return tx.dialect.codec.agent(row)


class Agents:
    """Agent identities; ``last_seen``/``replica`` of the records come from the lease."""

    def __init__(self, db: Runner, writer: Writer) -> None:
        self._db = db
        self._writer = writer

    async def upsert(self, agent: Agent) -> Agent:
        def op(tx: Tx) -> Agent:
            try:
                tx.run(
                    "INSERT INTO agents (id, server_id, cert_serial, version, enrollment)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET"
                    " id = excluded.id, cert_serial = excluded.cert_serial,"
                    " version = excluded.version, enrollment = excluded.enrollment",
                    tx.dialect.codec.agent_params(agent),
                )
            except tx.dialect.foreign_key_violation as exc:
                raise NotFound(f"server id {agent.server_id!r} not found") from exc
            return _agent_of(tx, agent.server_id)

        return await self._db.write(op)

    async def enrollment_check(self, token_id: str, name: str) -> tuple[JoinToken | None, bool]:
        def op(tx: Tx) -> tuple[JoinToken | None, bool]:
            named = tx.one("SELECT 1 FROM servers WHERE name = ?", (name,))
            return find_token(tx, token_id), named is not None

        return await self._db.read(op)

    async def enroll(self, plan: AgentEnrollment) -> EnrolledAgent:
        return await self._db.write(enroll_agent, plan)

    async def get_by_server(self, server_id: str) -> Agent:
        return await self._db.read(_agent_of, server_id)

    async def list(self) -> list[Agent]:
        def op(tx: Tx) -> list[Agent]:
            rows = tx.all(f"{AGENT_SELECT} ORDER BY a.server_id")
            return [tx.dialect.codec.agent(r) for r in rows]

        return await self._db.read(op)

    async def heartbeat(
        self, server_id: str, *, replica: str, seen: datetime, lease_until: datetime
    ) -> None:
        await self._writer.submit(
            Heartbeat(server_id=server_id, replica=replica, seen=seen, lease_until=lease_until)
        )

    async def release(self, server_id: str, *, replica: str) -> None:
        def op(tx: Tx) -> None:
            tx.run(
                "DELETE FROM agent_leases WHERE server_id = ? AND replica = ?",
                (server_id, replica),
            )

        await self._db.write(op)

    async def online(self, *, at: datetime) -> dict[str, str]:
        def op(tx: Tx) -> dict[str, str]:
            rows = tx.all(
                "SELECT server_id, replica FROM agent_leases WHERE lease_until > ?",
                (tx.dialect.codec.time(at),),
            )
            return {r[0]: r[1] for r in rows}

        return await self._db.read(op)


# --- machines -------------------------------------------------------------------------------


def _machine_of(tx: Tx, mac: str) -> Machine:
    row = tx.one(f"SELECT {MACHINE_COLS} FROM machines WHERE mac = ?", (mac,))
    if row is None:
        raise not_found("machine", mac)
    return tx.dialect.codec.machine(row)


class Machines:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def upsert(self, machine: Machine) -> Machine:
        """Insert or replace; ``created_at`` of an existing machine is kept."""

        def op(tx: Tx) -> Machine:
            tx.run(
                f"INSERT INTO machines ({MACHINE_COLS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET"
                " state = excluded.state, hostname = excluded.hostname,"
                " role = excluded.role, disk = excluded.disk,"
                " inventory = excluded.inventory, settings = excluded.settings,"
                " phase = excluded.phase, message = excluded.message,"
                " updated_at = excluded.updated_at",
                tx.dialect.codec.machine_params(machine),
            )
            return _machine_of(tx, machine.mac)

        return await self._db.write(op)

    async def get(self, mac: str) -> Machine:
        return await self._db.read(_machine_of, mac)

    async def list(self, *, state: MachineState | None = None) -> list[Machine]:
        def op(tx: Tx) -> list[Machine]:
            if state is None:
                rows = tx.all(f"SELECT {MACHINE_COLS} FROM machines ORDER BY mac")
            else:
                rows = tx.all(
                    f"SELECT {MACHINE_COLS} FROM machines WHERE state = ? ORDER BY mac",
                    (state.value,),
                )
            return [tx.dialect.codec.machine(r) for r in rows]

        return await self._db.read(op)

    async def delete(self, mac: str) -> None:
        def op(tx: Tx) -> None:
            if tx.run("DELETE FROM machines WHERE mac = ?", (mac,)) == 0:
                raise NotFound(f"machine {mac!r} not found")

        await self._db.write(op)


# --- clusters -------------------------------------------------------------------------------


def _cluster_of(tx: Tx, name: str) -> Cluster:
    row = tx.one(f"SELECT {CLUSTER_COLS} FROM clusters WHERE name = ?", (name,))
    if row is None:
        raise not_found("cluster", name)
    return tx.dialect.codec.cluster(row)


class Clusters:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def create(self, cluster: Cluster) -> Cluster:
        def op(tx: Tx) -> Cluster:
            try:
                tx.run(
                    f"INSERT INTO clusters ({CLUSTER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    tx.dialect.codec.cluster_params(cluster),
                )
            except tx.dialect.unique_violation as exc:
                raise already_exists("cluster", cluster.name) from exc
            return _cluster_of(tx, cluster.name)

        return await self._db.write(op)

    async def get(self, name: str) -> Cluster:
        return await self._db.read(_cluster_of, name)

    async def list(self) -> list[Cluster]:
        def op(tx: Tx) -> list[Cluster]:
            rows = tx.all(f"SELECT {CLUSTER_COLS} FROM clusters ORDER BY name")
            return [tx.dialect.codec.cluster(r) for r in rows]

        return await self._db.read(op)

    async def update(
        self,
        name: str,
        *,
        status: str | None = None,
        version: str | None = None,
        api_server: str | None = None,
        description: str | None = None,
    ) -> Cluster:
        changes = {
            "status": status,
            "version": version,
            "api_server": api_server,
            "description": description,
        }
        given = {k: v for k, v in changes.items() if v is not None}

        def op(tx: Tx) -> Cluster:
            sets = ", ".join(f"{column} = ?" for column in given)  # constant column names
            params = (*given.values(), tx.dialect.codec.time(datetime.now(UTC)), name)
            sql = f"UPDATE clusters SET {sets}{', ' if sets else ''}updated_at = ? WHERE name = ?"
            if tx.run(sql, params) == 0:
                raise not_found("cluster", name)
            return _cluster_of(tx, name)

        return await self._db.write(op)

    async def delete(self, name: str) -> None:
        def op(tx: Tx) -> None:
            if tx.run("DELETE FROM clusters WHERE name = ?", (name,)) == 0:
                raise NotFound(f"cluster {name!r} not found")

        await self._db.write(op)


# --- settings -------------------------------------------------------------------------------


class Settings:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        def op(tx: Tx) -> str | None:
            row = tx.one("SELECT value FROM settings WHERE key = ?", (key,))
            return None if row is None else str(row[0])

        return await self._db.read(op)

    async def set(self, key: str, value: str) -> None:
        def op(tx: Tx) -> None:
            tx.run(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        await self._db.write(op)

    async def set_if_absent(self, key: str, value: str) -> str:
        def op(tx: Tx) -> str:
            tx.run(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
            row = tx.one("SELECT value FROM settings WHERE key = ?", (key,))
            assert row is not None  # inserted above or already there, in this transaction
            return str(row[0])

        return await self._db.write(op)
