"""The hub against an in-memory store and transport: timing (autojump clock) and admission."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from lab.errors import NotFound
from lab.labd.hub.registry import AdmissionBucket, AgentHub
from lab.model import Agent, Server
from lab.proto import decode, encode
from lab.proto.messages import Heartbeat, Hello, Welcome


class FakeServers:
    def __init__(self, *names: str) -> None:
        self.by_name = {n: Server(name=n) for n in names}
        self.facts_writes = 0

    async def get_by_name(self, name: str) -> Server:
        try:
            return self.by_name[name]
        except KeyError:
            raise NotFound(name) from None

    async def set_facts(self, server_id: str, facts: dict[str, Any]) -> Server:
        self.facts_writes += 1
        [server] = [s for s in self.by_name.values() if s.id == server_id]
        return attrs.evolve(server, facts=facts)


class FakeAgents:
    def __init__(self) -> None:
        self.leases: dict[str, datetime] = {}
        self.current_serial = "01"

    async def get_by_server(self, server_id: str) -> Agent:
        return Agent(server_id=server_id, cert_serial=self.current_serial)

    async def heartbeat(
        self, server_id: str, *, replica: str, seen: datetime, lease_until: datetime
    ) -> None:
        self.leases[server_id] = lease_until

    async def release(self, server_id: str, *, replica: str) -> None:
        self.leases.pop(server_id, None)


@attrs.define
class FakeStore:
    servers: FakeServers
    agents: FakeAgents


class FakeRevocations:
    async def is_revoked(self, serial: str) -> bool:
        return False


class MemoryTransport:
    """The server end of a WebSocket made of two memory channels."""

    def __init__(self) -> None:
        self.to_server, self._incoming = trio.open_memory_channel[str | bytes](16)
        self._outgoing, self.from_server = trio.open_memory_channel[str | bytes](16)
        self.closed: tuple[int, str] | None = None
        self.closed_event = trio.Event()

    async def receive(self) -> str | bytes:
        return await self._incoming.receive()

    async def send(self, data: str | bytes) -> None:
        await self._outgoing.send(data)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)
        self.closed_event.set()


def make_hub(*names: str) -> tuple[AgentHub, FakeStore]:
    store = FakeStore(FakeServers(*names), FakeAgents())
    hub = AgentHub(store, FakeRevocations(), replica="test")  # type: ignore[arg-type]
    return hub, store


async def test_silent_agent_is_closed_after_three_intervals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, store = make_hub("web1")
    transport = MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hub.serve(transport, name="web1", serial="01"))
        await transport.to_server.send(encode(Hello(version="1")))
        welcome = decode(await transport.from_server.receive())
        assert isinstance(welcome, Welcome) and welcome.heartbeat_interval == 10
        started = trio.current_time()
        await trio.sleep(25)
        await transport.to_server.send(encode(Heartbeat(version="1")))  # keeps it alive
        await transport.closed_event.wait()
    assert transport.closed is not None and transport.closed[0] == 4000
    # Closed 30 s after the last heartbeat, not 30 s after the hello.
    assert trio.current_time() - started == pytest.approx(55, abs=0.5)
    assert store.agents.leases == {}
    assert not hub.is_online("web1")


async def test_silent_agent_is_closed_on_time_while_a_lease_write_hangs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reader also keeps the core's deadlines: a heartbeat whose lease write never
    returns (a stuck store) must not keep a silent session open."""
    hub, store = make_hub("web1")
    transport = MemoryTransport()
    hanging = trio.Event()
    written = store.agents.heartbeat

    async def stuck_heartbeat(
        server_id: str, *, replica: str, seen: datetime, lease_until: datetime
    ) -> None:
        if hanging.is_set():
            await trio.sleep_forever()
        await written(server_id, replica=replica, seen=seen, lease_until=lease_until)

    store.agents.heartbeat = stuck_heartbeat  # type: ignore[method-assign]
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: hub.serve(transport, name="web1", serial="01"))
            await transport.to_server.send(encode(Hello(version="1")))
            assert isinstance(decode(await transport.from_server.receive()), Welcome)
            hanging.set()
            await transport.to_server.send(encode(Heartbeat(version="1")))
            started = trio.current_time()
            await transport.closed_event.wait()
    assert transport.closed is not None and transport.closed[0] == 4000
    assert trio.current_time() - started == pytest.approx(30, abs=0.5)
    assert not hub.is_online("web1")


async def test_facts_are_written_at_most_once_a_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, store = make_hub("web1")
    transport = MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hub.serve(transport, name="web1", serial="01"))
        await transport.to_server.send(encode(Hello(version="1")))
        await transport.from_server.receive()
        assert store.servers.facts_writes == 1  # on hello
        for _ in range(12):  # two minutes of heartbeats every 10 s
            await trio.sleep(10)
            await transport.to_server.send(encode(Heartbeat(version="1", uptime=1.0)))
        await trio.sleep(1)
        assert store.servers.facts_writes == 3
        nursery.cancel_scope.cancel()


async def test_no_hello_in_time_is_a_policy_violation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, _ = make_hub("web1")
    transport = MemoryTransport()
    await hub.serve(transport, name="web1", serial="01")
    assert transport.closed is not None and transport.closed[0] == 1008


def test_admission_bucket() -> None:
    bucket = AdmissionBucket(rate=2.0)
    assert [bucket.admit(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.admit(0.4) is False
    assert bucket.admit(0.5) is True  # one token back after half a second
    assert AdmissionBucket(rate=0).admit(0.0) is True


async def test_a_second_session_is_refused_until_the_first_goes_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, _ = make_hub("web1")
    first, second, third = MemoryTransport(), MemoryTransport(), MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hub.serve(first, name="web1", serial="01"))
        await first.to_server.send(encode(Hello(version="1")))
        welcome = decode(await first.from_server.receive())
        assert isinstance(welcome, Welcome)
        await trio.sleep(10)
        await first.to_server.send(encode(Heartbeat(version="1")))
        await trio.sleep(5)
        # Same certificate, first session fresh: refused, and the first keeps its place.
        await second.to_server.send(encode(Hello(version="1")))
        await hub.serve(second, name="web1", serial="01")
        assert second.closed is not None and second.closed[0] == 4006
        info = hub.session("web1")
        assert info is not None and info.session_id == welcome.session_id
        assert first.closed is None
        # 16 s after its last message the first counts as half dead: a reconnect gets in.
        await trio.sleep(11)
        nursery.start_soon(lambda: hub.serve(third, name="web1", serial="01"))
        await third.to_server.send(encode(Hello(version="1")))
        assert isinstance(decode(await third.from_server.receive()), Welcome)
        await first.closed_event.wait()
        assert first.closed is not None and first.closed[0] == 4004
        nursery.cancel_scope.cancel()


async def test_the_current_certificate_takes_over_from_an_old_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, store = make_hub("web1")
    old, new = MemoryTransport(), MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hub.serve(old, name="web1", serial="01"))
        await old.to_server.send(encode(Hello(version="1")))
        await old.from_server.receive()
        store.agents.current_serial = "02"  # renewed (or re-enrolled with --replace)
        nursery.start_soon(lambda: hub.serve(new, name="web1", serial="02"))
        await new.to_server.send(encode(Hello(version="1")))
        assert isinstance(decode(await new.from_server.receive()), Welcome)
        await old.closed_event.wait()
        assert old.closed is not None and old.closed[0] == 4004
        nursery.cancel_scope.cancel()
