"""A caller that stops reading its stream stalls that stream only, never the agent's reader."""

from __future__ import annotations

import trio

from lab.proto import Channel, DataFrame, decode, encode, encode_data
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    ExecExit,
    ExecStart,
    Hello,
    LogsEnd,
    LogsStart,
    Ping,
    Pong,
    StreamCancel,
)
from tests.hub.test_hub_unit import MemoryTransport, make_hub

FRAMES = 40_000  # far more items than any fixed inbox would hold
FRAME = b"tick-07\n"


async def test_reader_keeps_serving_while_a_caller_stalls() -> None:
    hub, _ = make_hub("web1")
    transport = MemoryTransport()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: hub.serve(transport, name="web1", serial="01"))
            await transport.to_server.send(encode(Hello(version="1")))
            await transport.from_server.receive()  # welcome
            stalled_cm = hub.agent_stream("web1", ExecStart(stream_id=7, argv=["yes"]))
            stalled = await stalled_cm.__aenter__()
            start = decode(await transport.from_server.receive())
            assert isinstance(start, ExecStart)
            sid = start.stream_id
            # The caller opened a wide window, then stopped reading.
            await stalled.send(Credit(stream_id=7, bytes=FRAMES * len(FRAME)))
            credit = decode(await transport.from_server.receive())
            assert isinstance(credit, Credit) and credit.stream_id == sid
            for seq in range(FRAMES):
                await transport.to_server.send(encode_data(sid, Channel.STDOUT, seq, FRAME))
            # The session still answers at once, and another stream works.
            await transport.to_server.send(encode(Ping(nonce=5)))
            assert decode(await transport.from_server.receive()) == Pong(nonce=5)
            other = ExecStart(stream_id=8, argv=["true"])
            async with hub.agent_stream("web1", other) as stream:
                start2 = decode(await transport.from_server.receive())
                assert isinstance(start2, ExecStart)
                exit_msg = ExecExit(stream_id=start2.stream_id, code=0)
                await transport.to_server.send(encode(exit_msg))
                assert [item async for item in stream] == [ExecExit(stream_id=8, code=0)]
            # Nothing of the stalled stream was lost: every byte, in order, in few items.
            received = bytearray()
            items = 0
            while len(received) < FRAMES * len(FRAME):
                item = await stalled.__anext__()
                assert isinstance(item, DataFrame) and item.stream_id == 7
                received += item.payload
                items += 1
            assert received == FRAME * FRAMES
            assert items < FRAMES * len(FRAME) // DEFAULT_WINDOW * 8
            await stalled_cm.__aexit__(None, None, None)
            assert decode(await transport.from_server.receive()) == StreamCancel(stream_id=sid)
            nursery.cancel_scope.cancel()


async def test_log_lines_stay_one_frame_each() -> None:
    hub, _ = make_hub("web1")
    transport = MemoryTransport()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: hub.serve(transport, name="web1", serial="01"))
            await transport.to_server.send(encode(Hello(version="1")))
            await transport.from_server.receive()  # welcome
            async with hub.agent_stream("web1", LogsStart(stream_id=3, follow=True)) as stream:
                start = decode(await transport.from_server.receive())
                assert isinstance(start, LogsStart)
                for seq, line in enumerate([b"one", b"", b"three"]):
                    frame = encode_data(start.stream_id, Channel.LOG, seq, line)
                    await transport.to_server.send(frame)
                await transport.to_server.send(encode(LogsEnd(stream_id=start.stream_id)))
                got = [item async for item in stream]
            assert [i.payload for i in got if isinstance(i, DataFrame)] == [b"one", b"", b"three"]
            nursery.cancel_scope.cancel()


async def test_leaving_a_stream_while_the_agent_is_slow_still_cancels_it() -> None:
    hub, _ = make_hub("web1")
    transport = MemoryTransport()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: hub.serve(transport, name="web1", serial="01"))
            await transport.to_server.send(encode(Hello(version="1")))
            await transport.from_server.receive()  # welcome
            cm = hub.agent_stream("web1", ExecStart(stream_id=9, argv=["sleep", "60"]))
            await cm.__aenter__()
            start = decode(await transport.from_server.receive())
            assert isinstance(start, ExecStart)
            # The agent stops reading while it pings: labd's outbox fills up with pongs.
            for nonce in range(200):
                with trio.move_on_after(0.5) as blocked:
                    await transport.to_server.send(encode(Ping(nonce=nonce)))
                if blocked.cancelled_caught:
                    break  # labd's reader waits for outbox room: the outbox is full
            else:
                raise AssertionError("labd's outbox never filled up")
            # The caller leaves at once, and the cancel is not lost.
            with trio.fail_after(1):
                await cm.__aexit__(None, None, None)
            seen = []
            while StreamCancel(stream_id=start.stream_id) not in seen:
                seen.append(decode(await transport.from_server.receive()))
            nursery.cancel_scope.cancel()
