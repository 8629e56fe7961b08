"""Contract: the labd replica registry (leases) and the cluster change counter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio

from lab.errors import NotFound
from lab.model import Replica, Server
from lab.store import Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def replica(rid: str, at: datetime, *, lease: float = 6.0, url: str = "") -> Replica:
    return Replica(
        id=rid,
        url=url or f"https://{rid}:3100",
        started_at=T0,
        seen=at,
        lease_until=at + timedelta(seconds=lease),
    )


async def test_register_renew_and_get(store: Store) -> None:
    first = await store.replicas.register(replica("a", T0))
    assert first == replica("a", T0)
    assert await store.replicas.get("a") == first
    later = T0 + timedelta(seconds=2)
    renewed = await store.replicas.register(replica("a", later, url="https://10.0.0.5:3100"))
    assert renewed.seen == later and renewed.url == "https://10.0.0.5:3100"
    assert renewed.lease_until == later + timedelta(seconds=6)
    with pytest.raises(NotFound):
        await store.replicas.get("ghost")


async def test_list_alive_only_counts_valid_leases(store: Store) -> None:
    await store.replicas.register(replica("b", T0))
    await store.replicas.register(replica("a", T0 + timedelta(seconds=10)))
    assert [r.id for r in await store.replicas.list()] == ["a", "b"]
    at = T0 + timedelta(seconds=7)  # b's lease (6 s) is over, a's is not
    assert [r.id for r in await store.replicas.list(alive_at=at)] == ["a"]
    assert not (await store.replicas.get("b")).alive(at)
    assert (await store.replicas.get("a")).alive(at)


async def test_remove_is_idempotent(store: Store) -> None:
    await store.replicas.register(replica("a", T0))
    await store.replicas.remove("a")
    await store.replicas.remove("a")
    assert await store.replicas.list() == []


async def test_change_counter_never_loses_a_bump(store: Store) -> None:
    start = await store.replicas.changes()
    assert start == 0
    values: list[int] = []

    async def bump() -> None:
        values.append(await store.replicas.bump_changes())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(bump)
    assert sorted(values) == list(range(1, 21))
    assert await store.replicas.changes() == 20


async def test_holders_name_the_replica_of_each_valid_lease(store: Store) -> None:
    web = await store.servers.create(Server(name="web1"))
    db = await store.servers.create(Server(name="db1"))
    await store.agents.heartbeat(web.id, replica="a", seen=T0, lease_until=T0 + timedelta(30))
    await store.agents.heartbeat(db.id, replica="b", seen=T0, lease_until=T0 + timedelta(seconds=5))
    at = T0 + timedelta(seconds=10)
    assert await store.replicas.holders(at=T0) == {"web1": "a", "db1": "b"}
    assert await store.replicas.holders(at=at) == {"web1": "a"}
    # A new holder takes the lease over.
    await store.agents.heartbeat(db.id, replica="a", seen=at, lease_until=at + timedelta(30))
    assert await store.replicas.holders(at=at) == {"web1": "a", "db1": "a"}
