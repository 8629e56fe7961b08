"""Reach the database of a harness labd from a test: presence leases and the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from lab.model import AuditEntry
from lab.store import Store, open_store
from tests.labd.harness import RunningLabd


@asynccontextmanager
async def labd_store(labd: RunningLabd) -> AsyncIterator[Store]:
    """A second connection to the labd's own database (SQLite in WAL mode allows it)."""
    async with open_store(labd.config.effective_database_url) as store:
        yield store


async def mark_online(labd: RunningLabd, name: str, *, replica: str = "replica-a") -> None:
    """Write the presence lease an agent's heartbeat would write."""
    async with labd_store(labd) as store:
        server = await store.servers.get_by_name(name)
        now = datetime.now(UTC)
        await store.agents.heartbeat(
            server.id, replica=replica, seen=now, lease_until=now + timedelta(minutes=5)
        )


async def audit_entries(labd: RunningLabd, action: str) -> list[AuditEntry]:
    async with labd_store(labd) as store:
        return await store.audit.list(action=action)
