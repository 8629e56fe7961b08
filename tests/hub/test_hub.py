"""The agent hub with a real labd and in-process agents over real mTLS WebSockets."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from lab import __version__
from lab.agent.daemon import run_agent
from lab.errors import NotFound, Unavailable
from lab.proto import Channel, DataFrame, decode, encode
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    Hello,
    LogsEnd,
    LogsStart,
    Ping,
    Pong,
    ServerShutdown,
    StdinClose,
    Welcome,
)
from tests.hub.hubtools import (
    agent_creds,
    connect_raw,
    enroll_state,
    labd_with_hub,
    raw_agent,
    say_hello,
    wait_process_gone,
)


async def collect(stream: object) -> list[object]:
    return [item async for item in stream]  # type: ignore[attr-defined]


def close_code(exc: ConnectionClosed) -> int | None:
    return None if exc.reason is None else exc.reason.code


def output(items: list[object], channel: Channel) -> bytes:
    return b"".join(i.payload for i in items if isinstance(i, DataFrame) and i.channel == channel)


async def test_agent_online_exec_and_logs(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text("one\ntwo\nthree\n")
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.running.admin()
            settings = await enroll_state(
                labd.running, admin, "web1", tmp_path / "a1", log_sources={"app": log_file}
            )
            shutdown = trio.Event()
            agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
            await agent.wait_connected()
            hub = labd.hub
            assert hub.is_online("web1")
            assert labd.context.connected_agents() == 1
            [info] = hub.sessions()
            assert (info.name, info.version) == ("web1", __version__)
            assert info.facts["agent_version"] == __version__
            server = await labd.context.store.servers.get_by_name("web1")
            online = await labd.context.store.agents.online(at=info.connected_at)
            assert online == {server.id: hub.replica}

            start = ExecStart(stream_id=7, argv=["sh", "-c", "echo out; echo err >&2; exit 3"])
            async with hub.agent_stream("web1", start) as stream:
                items = await collect(stream)
            assert isinstance(items[0], ExecStarted) and items[0].stream_id == 7
            assert output(items, Channel.STDOUT) == b"out\n"
            assert output(items, Channel.STDERR) == b"err\n"
            assert isinstance(items[-1], ExecExit)
            assert (items[-1].stream_id, items[-1].code) == (7, 3)

            start = ExecStart(stream_id=8, argv=["cat"], stdin=True)
            async with hub.agent_stream("web1", start) as stream:
                await stream.send(b"hello ")
                await stream.send(b"world")
                await stream.send(StdinClose(stream_id=8))
                items = await collect(stream)
            assert output(items, Channel.STDOUT) == b"hello world"
            assert isinstance(items[-1], ExecExit) and items[-1].code == 0

            logs = LogsStart(stream_id=9, source="app", lines=2)
            async with hub.agent_stream("web1", logs) as stream:
                items = await collect(stream)
            lines = [i.payload for i in items if isinstance(i, DataFrame)]
            assert lines == [b"two", b"three"]
            assert isinstance(items[-1], LogsEnd) and items[-1].stream_id == 9

            shutdown.set()
            await hub.wait_offline("web1")
            assert await labd.context.store.agents.online(at=info.connected_at) == {}


async def test_leaving_a_stream_early_kills_the_remote_process(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.running.admin()
            settings = await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            shutdown = trio.Event()
            agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
            await agent.wait_connected()
            start = ExecStart(stream_id=1, argv=["sleep", "60"])
            async with labd.hub.agent_stream("web1", start) as stream:
                first = await stream.__anext__()
                assert isinstance(first, ExecStarted)
            await wait_process_gone(first.pid)
            shutdown.set()


async def test_offline_and_unknown_servers(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "sleepy", tmp_path / "a1")
            start = ExecStart(stream_id=1, argv=["true"])
            with trio.fail_after(1), pytest.raises(Unavailable, match="agent not connected"):
                async with labd.hub.agent_stream("sleepy", start):
                    pass
            with pytest.raises(NotFound):
                async with labd.hub.agent_stream("nobody", start):
                    pass
            assert not labd.hub.is_online("sleepy")


async def test_malformed_message_closes_only_that_connection(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.running.admin()
            good = await enroll_state(labd.running, admin, "good", tmp_path / "good")
            await enroll_state(labd.running, admin, "bad", tmp_path / "bad")
            shutdown = trio.Event()
            agent = await nursery.start(partial(run_agent, good, shutdown=shutdown))
            await agent.wait_connected()
            async with raw_agent(labd.running, agent_creds(tmp_path / "bad", "bad")) as ws:
                assert isinstance(await say_hello(ws), Welcome)
                assert labd.hub.is_online("bad")
                await ws.send_message('{"type": "exec-exit", "v": 1, "stream_id": "x"}')
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert close_code(closed.value) == 1002
            await labd.hub.wait_offline("bad")
            assert labd.hub.is_online("good")
            entries = await labd.context.store.audit.list(action="agent.protocol_error")
            assert [e.resource for e in entries] == ["server/bad"]
            # Unknown message types get 1003.
            async with raw_agent(labd.running, agent_creds(tmp_path / "bad", "bad")) as ws:
                await say_hello(ws)
                await ws.send_message('{"type": "launch-missiles", "v": 1}')
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert close_code(closed.value) == 1003
            assert labd.hub.is_online("good")
            shutdown.set()


async def test_second_connection_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            creds = agent_creds(tmp_path / "a1", "web1")
            async with raw_agent(labd.running, creds) as first:
                welcome1 = await say_hello(first)
                async with raw_agent(labd.running, creds) as second:
                    await second.send_message(encode(Hello(version="raw", facts={}, labels={})))
                    with pytest.raises(ConnectionClosed) as closed:
                        await second.get_message()
                    assert close_code(closed.value) == 4006
                info = labd.hub.session("web1")
                assert isinstance(welcome1, Welcome)
                assert info is not None and info.session_id == welcome1.session_id
                await first.send_message(encode(Ping(nonce=7)))
                assert decode(await first.get_message()) == Pong(nonce=7)


async def test_revoked_agent_is_disconnected_and_refused(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.running.admin()
            settings = await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            creds = agent_creds(tmp_path / "a1", "web1")
            async with raw_agent(labd.running, creds) as ws:
                await say_hello(ws)
                async with labd.running.client(admin) as http:
                    resp = await http.post("/api/certs/revoke", json={"target": "server/web1"})
                assert resp.status_code == 200, resp.text
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert close_code(closed.value) == 4005
            await labd.hub.wait_offline("web1")
            # trio-websocket raises the refusal from its reader task, i.e. out of the nursery.
            with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True) as rejected:
                async with trio.open_nursery() as dialer:
                    await connect_raw(dialer, labd.running, creds)
            refusal = rejected.value.exceptions[0]
            while isinstance(refusal, BaseExceptionGroup):
                refusal = refusal.exceptions[0]
            assert isinstance(refusal, ConnectionRejected) and refusal.status_code == 401
            # The real agent keeps trying (with backoff) and never gets in.
            shutdown = trio.Event()
            agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
            assert agent.connections == 0
            assert not labd.hub.is_online("web1")
            shutdown.set()


async def test_admission_rate_refuses_excess_handshakes(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path, agent_admit_rate=0.001) as labd:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "a", tmp_path / "a")
            await enroll_state(labd.running, admin, "b", tmp_path / "b")
            async with raw_agent(labd.running, agent_creds(tmp_path / "a", "a")) as first:
                assert isinstance(await say_hello(first), Welcome)
                async with raw_agent(labd.running, agent_creds(tmp_path / "b", "b")) as second:
                    with pytest.raises(ConnectionClosed) as closed:
                        await second.get_message()
                    assert close_code(closed.value) == 1013
                assert labd.hub.is_online("a") and not labd.hub.is_online("b")


async def test_shutdown_says_goodbye_and_agents_come_back(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            async with labd_with_hub(tmp_path) as labd:
                port = labd.running.port
                admin = await labd.running.admin()
                settings = await enroll_state(labd.running, admin, "a-real", tmp_path / "a")
                await enroll_state(labd.running, admin, "z-raw", tmp_path / "z")
                shutdown = trio.Event()
                agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
                await agent.wait_connected()
                async with raw_agent(labd.running, agent_creds(tmp_path / "z", "z-raw")) as ws:
                    await say_hello(ws)
                    start = ExecStart(stream_id=5, argv=["sleep", "60"])
                    async with labd.hub.agent_stream("a-real", start) as stream:
                        started = await stream.__anext__()
                        assert isinstance(started, ExecStarted)
                        labd.running.shutdown.set()
                        last = await stream.__anext__()
                        assert last.code == "unavailable"  # type: ignore[union-attr]
                        assert "shutting down" in last.message  # type: ignore[union-attr]
                    goodbye = decode(await ws.get_message())
                    assert isinstance(goodbye, ServerShutdown)
                    assert 1.0 <= goodbye.retry_after <= 10.0
                    with pytest.raises(ConnectionClosed):
                        await ws.get_message()
                await wait_process_gone(started.pid)
            # A new labd on the same port and data dir: the agent finds it by itself.
            async with labd_with_hub(tmp_path, port=port) as labd2:
                await agent.wait_connected(after=1)
                assert labd2.hub.is_online("a-real")
                shutdown.set()
                await labd2.hub.wait_offline("a-real")


async def test_heartbeat_updates_presence(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            async with raw_agent(labd.running, agent_creds(tmp_path / "a1", "web1")) as ws:
                await say_hello(ws)
                from lab.proto.messages import Heartbeat, Ping, Pong

                await ws.send_message(
                    encode(Heartbeat(load=[0.5, 0.25, 0.1], uptime=12.0, version="9.9"))
                )
                await ws.send_message(encode(Ping(nonce=42)))
                assert decode(await ws.get_message()) == Pong(nonce=42)
                info = labd.hub.session("web1")
                assert info is not None and info.last_heartbeat is not None
                assert info.version == "9.9" and info.facts["load"] == [0.5, 0.25, 0.1]


async def test_output_is_paced_by_the_callers_credit(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with labd_with_hub(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.running.admin()
            settings = await enroll_state(labd.running, admin, "web1", tmp_path / "a1")
            shutdown = trio.Event()
            agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
            await agent.wait_connected()
            total = 1_000_000
            start = ExecStart(stream_id=3, argv=["head", "-c", str(total), "/dev/zero"])
            received = 0
            async with labd.hub.agent_stream("web1", start) as stream:
                # Without credit from us the agent stops at the initial window: more would
                # be a flow-control violation and end the stream with an error instead.
                async for item in stream:
                    assert not isinstance(item, Error | ExecExit), item
                    if isinstance(item, DataFrame):
                        received += len(item.payload)
                        if received == DEFAULT_WINDOW:
                            break
                await stream.send(Credit(stream_id=3, bytes=total))
                items = await collect(stream)
            received += len(output(items, Channel.STDOUT))
            assert received == total
            assert isinstance(items[-1], ExecExit) and items[-1].bytes_out == total
            shutdown.set()
