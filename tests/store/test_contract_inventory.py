"""Contract: servers, agents and leases, machines, clusters, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import trio

from lab.errors import Conflict, NotFound
from lab.model import Agent, Cluster, JoinToken, Machine, MachineState, Server, TokenKind
from lab.store import Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def test_server_create_get_and_duplicate_name(store: Store) -> None:
    created = await store.servers.create(
        Server(name="web1", labels={"role": "web"}, facts={"cpus": 4, "disks": ["sda"]})
    )
    assert await store.servers.get(created.id) == created
    assert await store.servers.get_by_name("web1") == created
    assert created.facts == {"cpus": 4, "disks": ["sda"]}
    with pytest.raises(Conflict):
        await store.servers.create(Server(name="web1"))
    with pytest.raises(NotFound):
        await store.servers.get("nope")
    with pytest.raises(NotFound):
        await store.servers.get_by_name("nope")


async def test_server_times_round_trip_as_utc(store: Store) -> None:
    local = datetime(2026, 11, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    created = await store.servers.create(Server(name="t", created_at=local))
    assert created.created_at == local
    assert created.created_at.utcoffset() == timedelta(0)


async def test_server_list_by_labels_ordered_by_name(store: Store) -> None:
    await store.servers.create(Server(name="b", labels={"role": "worker", "zone": "a"}))
    await store.servers.create(Server(name="a", labels={"role": "worker", "zone": "b"}))
    await store.servers.create(Server(name="c", labels={"role": "db"}))
    assert [s.name for s in await store.servers.list()] == ["a", "b", "c"]
    assert [s.name for s in await store.servers.list(labels={"role": "worker"})] == ["a", "b"]
    both = await store.servers.list(labels={"role": "worker", "zone": "a"})
    assert [s.name for s in both] == ["b"]
    assert await store.servers.list(labels={"role": "none"}) == []
    await store.servers.create(Server(name="q", labels={'odd"key.$': "v"}))
    assert [s.name for s in await store.servers.list(labels={'odd"key.$': "v"})] == ["q"]


async def test_server_set_labels_facts_delete(store: Store) -> None:
    s = await store.servers.create(Server(name="n1", labels={"a": "1", "b": "2"}))
    updated = await store.servers.set_labels("n1", {"c": "3", "a": "9"}, ["b"])
    assert updated.labels == {"a": "9", "c": "3"}
    assert (await store.servers.get(s.id)).labels == {"a": "9", "c": "3"}
    facted = await store.servers.set_facts(s.id, {"load": 0.5})
    assert facted.facts == {"load": 0.5}
    with pytest.raises(NotFound):
        await store.servers.set_labels("ghost", {}, [])
    with pytest.raises(NotFound):
        await store.servers.set_facts("ghost", {})
    await store.servers.delete("n1")
    with pytest.raises(NotFound):
        await store.servers.get(s.id)
    with pytest.raises(NotFound):
        await store.servers.delete("n1")


async def test_agent_upsert_get_list(store: Store) -> None:
    s1 = await store.servers.create(Server(name="s1"))
    s2 = await store.servers.create(Server(name="s2"))
    a1 = await store.agents.upsert(Agent(server_id=s1.id, cert_serial="01", version="0.1"))
    assert a1.server_id == s1.id and a1.cert_serial == "01" and a1.last_seen is None
    renewed = await store.agents.upsert(Agent(server_id=s1.id, cert_serial="02", version="0.2"))
    assert (await store.agents.get_by_server(s1.id)) == renewed
    assert renewed.cert_serial == "02"
    traced = {"token_id": "t1", "mode": "new", "binding": {"hostname": "s2"}}
    a2 = await store.agents.upsert(Agent(server_id=s2.id, enrollment=traced))
    assert a2.enrollment == traced and renewed.enrollment == {}
    assert sorted(a.server_id for a in await store.agents.list()) == sorted([s1.id, s2.id])
    with pytest.raises(NotFound):
        await store.agents.get_by_server("ghost")
    with pytest.raises(NotFound):
        await store.agents.upsert(Agent(server_id="ghost"))


async def test_heartbeat_lease_online_release(store: Store) -> None:
    s1 = await store.servers.create(Server(name="s1"))
    s2 = await store.servers.create(Server(name="s2"))
    await store.agents.upsert(Agent(server_id=s1.id))
    await store.agents.heartbeat(s1.id, replica="r1", seen=T0, lease_until=T0 + timedelta(hours=1))
    await store.agents.heartbeat(
        s2.id, replica="r2", seen=T0, lease_until=T0 + timedelta(seconds=30)
    )
    assert await store.agents.online(at=T0 + timedelta(seconds=10)) == {s1.id: "r1", s2.id: "r2"}
    # A lease that ran out is not online, even though its row is still there.
    assert await store.agents.online(at=T0 + timedelta(seconds=31)) == {s1.id: "r1"}
    agent = await store.agents.get_by_server(s1.id)
    assert agent.last_seen == T0 and agent.replica == "r1"

    # Another replica took the connection: releasing from the old replica must not drop it.
    await store.agents.heartbeat(s1.id, replica="r3", seen=T0, lease_until=T0 + timedelta(hours=1))
    await store.agents.release(s1.id, replica="r1")
    assert (await store.agents.online(at=T0))[s1.id] == "r3"
    await store.agents.release(s1.id, replica="r3")
    assert s1.id not in await store.agents.online(at=T0)


async def test_heartbeat_unknown_server_fails_alone(store: Store) -> None:
    s1 = await store.servers.create(Server(name="s1"))
    results: dict[str, object] = {}

    async def beat(server_id: str) -> None:
        try:
            await store.agents.heartbeat(
                server_id, replica="r", seen=T0, lease_until=T0 + timedelta(seconds=30)
            )
            results[server_id] = "ok"
        except NotFound as exc:
            results[server_id] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat, "ghost")
            nursery.start_soon(beat, s1.id)
    assert results[s1.id] == "ok"
    assert isinstance(results["ghost"], NotFound)
    assert await store.agents.online(at=T0) == {s1.id: "r"}


async def test_machines(store: Store) -> None:
    mac = "52:54:00:12:34:56"
    first = await store.machines.upsert(
        Machine(mac=mac, inventory={"cpus": 2}, created_at=T0, updated_at=T0)
    )
    assert first.state is MachineState.DISCOVERED and first.inventory == {"cpus": 2}
    queued = await store.machines.upsert(
        Machine(
            mac=mac,
            state=MachineState.QUEUED,
            hostname="web1",
            role="worker",
            settings={"k3s": True},
            created_at=T0 + timedelta(days=1),
            updated_at=T0 + timedelta(days=1),
        )
    )
    assert queued.hostname == "web1" and queued.settings == {"k3s": True}
    assert queued.created_at == T0  # kept from the first sighting
    assert queued.updated_at == T0 + timedelta(days=1)
    assert await store.machines.get(mac) == queued
    other = await store.machines.upsert(Machine(mac="52:54:00:00:00:01"))
    assert [m.mac for m in await store.machines.list()] == [other.mac, mac]
    assert await store.machines.list(state=MachineState.QUEUED) == [queued]
    await store.machines.delete(mac)
    with pytest.raises(NotFound):
        await store.machines.get(mac)
    with pytest.raises(NotFound):
        await store.machines.delete(mac)


async def test_clusters(store: Store) -> None:
    c = await store.clusters.create(Cluster(name="k3s-a", description="first"))
    assert await store.clusters.get("k3s-a") == c
    with pytest.raises(Conflict):
        await store.clusters.create(Cluster(name="k3s-a"))
    await store.clusters.create(Cluster(name="a-first"))
    assert [x.name for x in await store.clusters.list()] == ["a-first", "k3s-a"]
    await store.clusters.delete("k3s-a")
    with pytest.raises(NotFound):
        await store.clusters.get("k3s-a")
    with pytest.raises(NotFound):
        await store.clusters.delete("k3s-a")


async def test_cluster_registry_columns_and_update(store: Store) -> None:
    made = await store.clusters.create(
        Cluster(
            name="lab",
            origin="imported",
            api_server="https://10.0.0.1:6443",
            version="v1.31.4+k3s1",
            status="ready",
            created_by="user/ann",
        )
    )
    assert made.updated_at is None and made.created_by == "user/ann"
    changed = await store.clusters.update("lab", status="failed", version="v1.32.0+k3s1")
    assert (changed.status, changed.version, changed.api_server) == (
        "failed",
        "v1.32.0+k3s1",
        "https://10.0.0.1:6443",
    )
    assert changed.updated_at is not None
    assert await store.clusters.get("lab") == changed
    with pytest.raises(NotFound):
        await store.clusters.update("absent", status="ready")


async def test_settings(store: Store) -> None:
    assert await store.settings.get("cluster_id") is None
    await store.settings.set("k", "1")
    await store.settings.set("k", "2")
    assert await store.settings.get("k") == "2"


async def test_settings_set_if_absent_first_writer_wins(store: Store) -> None:
    winners: list[str] = []

    async def race(value: str) -> None:
        winners.append(await store.settings.set_if_absent("ca_id", value))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(race, f"v{i}")
    assert len(set(winners)) == 1
    assert await store.settings.get("ca_id") == winners[0]


async def test_ping_and_schema_version(store: Store) -> None:
    assert await store.schema_version() >= 1
    latency = await store.ping()
    assert 0 <= latency < 5
    assert store.url


async def test_enrollment_check_reads_the_token_and_the_name_in_one_call(store: Store) -> None:
    made = await store.tokens.create(
        JoinToken(kind=TokenKind.AGENT, secret_hash="h", expires_at=T0 + timedelta(hours=1))
    )
    assert await store.agents.enrollment_check(made.id, "web1") == (made, False)
    await store.servers.create(Server(name="web1"))
    assert await store.agents.enrollment_check(made.id, "web1") == (made, True)
    assert await store.agents.enrollment_check("nope", "web2") == (None, False)
