"""labd's relay between a CLI stream and an agent stream, flow control only: output is cut to
the CLI's credit and resumes on each grant, the agent gets credit back only for what reached the
CLI, stdin is checked and credited back, and the agent's end messages carry the CLI's stream id.

The seams are fakes (a send function and an agent stream over memory channels); no labd, no
sockets, no timing: each step waits for the message it expects under a ``fail_after`` cap.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio

from lab.errors import Unavailable
from lab.labd.relay.relay import Incoming, Relay, Target, Uplink
from lab.proto import Channel, CloseCode, DataFrame, ProtocolError, decode_data
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    LogsEnd,
    LogsStart,
    Message,
    Signal,
    StdinClose,
    StreamCancel,
)
from lab.proto.streams import ReceiveWindow

CLI_SID = 3
AGENT_SID = 41


class FakeAgentStream:
    """The agent's end of one hub stream: what the relay sends, and what the agent yields."""

    stream_id = AGENT_SID

    def __init__(self, incoming: list[Incoming]) -> None:
        self.incoming = list(incoming)
        self.sent_in, self.sent = trio.open_memory_channel[Uplink](100)

    async def send(self, item: Uplink, /) -> None:
        await self.sent_in.send(item)

    def __aiter__(self) -> FakeAgentStream:
        return self

    async def __anext__(self) -> Incoming:
        await trio.lowlevel.checkpoint()
        if not self.incoming:
            raise StopAsyncIteration
        return self.incoming.pop(0)


def relay(
    start: ExecStart | LogsStart, **kw: Any
) -> tuple[Relay, trio.MemoryReceiveChannel[Message | bytes]]:
    to_cli, from_relay = trio.open_memory_channel[Message | bytes](100)
    target = Target(stream_id=CLI_SID, server="web1", start=start)
    # Flow control touches neither the context nor the principal.
    return Relay(cast(Any, None), cast(Any, None), target, to_cli.send, **kw), from_relay


def exec_start(**kw: Any) -> ExecStart:
    return ExecStart(stream_id=AGENT_SID, argv=["cat"], **kw)


def frame(payload: bytes, seq: int = 0, channel: Channel = Channel.STDOUT) -> DataFrame:
    return DataFrame(stream_id=AGENT_SID, channel=channel, seq=seq, payload=payload)


async def received_data(channel: trio.MemoryReceiveChannel[Message | bytes]) -> DataFrame:
    item = await channel.receive()
    assert isinstance(item, bytes), item
    return decode_data(item)


def test_windows_at_start() -> None:
    r, _ = relay(exec_start())
    assert r.down.window.available == DEFAULT_WINDOW
    assert (r.agent_window.window, r.stdin_window.window) == (DEFAULT_WINDOW, DEFAULT_WINDOW)
    assert r.down.exited is False and not r.down.at_eof
    r, _ = relay(exec_start(), window=100, agent_window=DEFAULT_WINDOW)
    assert r.down.window.available == 100
    assert (r.agent_window.window, r.stdin_window.window) == (100, 100)
    r, _ = relay(exec_start(), window=100, agent_window=DEFAULT_WINDOW + 1)
    assert (r.agent_window.window, r.stdin_window.window) == (DEFAULT_WINDOW + 1, 100)


@pytest.mark.parametrize(
    ("start", "channels"),
    [
        (exec_start(), [Channel.STDOUT, Channel.STDERR]),
        (exec_start(tty=True), [Channel.STDOUT]),
        (LogsStart(stream_id=AGENT_SID), [Channel.LOG]),
    ],
)
def test_channels_towards_the_cli(start: ExecStart | LogsStart, channels: list[Channel]) -> None:
    r, _ = relay(start)
    for channel in channels:
        r.down.eof(channel)
    assert r.down.at_eof


async def test_output_waits_for_cli_credit_and_the_agent_is_credited_after() -> None:
    r, from_relay = relay(exec_start(), window=4, agent_window=10)
    agent = FakeAgentStream(
        [frame(b"0123456789"), ExecExit(stream_id=AGENT_SID, code=0, bytes_out=10)]
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r._downlink, agent)
            first = await received_data(from_relay)
            assert (first.stream_id, first.seq, first.payload) == (CLI_SID, 0, b"0123")
            r.grant(Credit(stream_id=CLI_SID, bytes=3))
            second = await received_data(from_relay)
            assert (second.seq, second.payload) == (1, b"456")
            r.grant(Credit(stream_id=CLI_SID, bytes=5))
            third = await received_data(from_relay)
            assert (third.seq, third.payload) == (2, b"789")
            assert r.down.window.available == 2  # 5 granted, 3 used: the rest is kept
            # the whole frame reached the CLI: half the agent's window is read, grant it back
            assert await agent.sent.receive() == Credit(stream_id=AGENT_SID, bytes=10)
            done = await from_relay.receive()
    assert done == ExecExit(stream_id=CLI_SID, code=0, bytes_out=10)
    assert r.result == {
        "code": 0,
        "signal": None,
        "bytes_out": 10,
        "bytes_dropped": 0,
        "timed_out": False,
    }


async def test_the_agent_is_credited_in_batches_of_half_a_window() -> None:
    r, from_relay = relay(exec_start(), window=1000, agent_window=DEFAULT_WINDOW)
    r.agent_window = ReceiveWindow(10)  # a small agent window: a grant every 5 bytes read
    frames = [frame(b"abcd", 0), frame(b"e", 1), frame(b"fghijk", 2, Channel.STDERR)]
    agent = FakeAgentStream([*frames, LogsEnd(stream_id=AGENT_SID)])
    with trio.fail_after(10):
        await r._downlink(agent)
    agent.sent_in.close()
    assert [item async for item in agent.sent] == [
        Credit(stream_id=AGENT_SID, bytes=5),
        Credit(stream_id=AGENT_SID, bytes=6),
    ]
    out = [decode_data(cast(bytes, await from_relay.receive())) for _ in range(3)]
    assert [(f.channel, f.seq, f.payload) for f in out] == [
        (Channel.STDOUT, 0, b"abcd"),
        (Channel.STDOUT, 1, b"e"),
        (Channel.STDERR, 0, b"fghijk"),
    ]
    assert await from_relay.receive() == LogsEnd(stream_id=CLI_SID)
    assert r.result == {"bytes_out": 11}


async def test_the_exit_counts_what_reached_the_cli() -> None:
    r, from_relay = relay(exec_start())
    agent = FakeAgentStream(
        [
            ExecStarted(stream_id=AGENT_SID, pid=77),
            frame(b"ab"),
            frame(b"c", 1),
            ExecExit(
                stream_id=AGENT_SID, signal="KILL", bytes_out=99, bytes_dropped=4, timed_out=True
            ),
        ]
    )
    with trio.fail_after(10):
        await r._downlink(agent)
    assert await from_relay.receive() == ExecStarted(stream_id=CLI_SID, pid=77)
    await received_data(from_relay)
    await received_data(from_relay)
    assert await from_relay.receive() == ExecExit(
        stream_id=CLI_SID, signal="KILL", bytes_out=3, bytes_dropped=4, timed_out=True
    )
    assert r.result == {
        "pid": 77,
        "code": None,
        "signal": "KILL",
        "bytes_out": 3,
        "bytes_dropped": 4,
        "timed_out": True,
    }


async def test_an_agent_error_or_a_vanished_agent_ends_the_cli_stream() -> None:
    r, from_relay = relay(exec_start())
    with trio.fail_after(10):
        await r._downlink(
            FakeAgentStream([Error(stream_id=AGENT_SID, code="not_found", message="no such unit")])
        )
    assert await from_relay.receive() == Error(
        stream_id=CLI_SID, code="not_found", message="no such unit"
    )
    assert r.result == {"error": "not_found"}
    r, from_relay = relay(exec_start())
    with trio.fail_after(10):
        await r._downlink(FakeAgentStream([]))
    assert await from_relay.receive() == Error(
        stream_id=CLI_SID, code="unavailable", message="agent disconnected"
    )
    assert r.result == {"error": "unavailable"}


async def test_stdin_is_checked_and_credited_back_once_half_a_window_went_up() -> None:
    r, from_relay = relay(exec_start(stdin=True), window=10)
    agent = FakeAgentStream([])
    stdin = [
        DataFrame(stream_id=CLI_SID, channel=Channel.STDIN, seq=i, payload=p)
        for i, p in enumerate([b"ab", b"cd", b"e"])
    ]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r._uplink, agent)
            for f in stdin:
                await r.stdin(f)
            assert [await agent.sent.receive() for _ in range(3)] == [b"ab", b"cd", b"e"]
            assert await from_relay.receive() == Credit(stream_id=CLI_SID, bytes=5)
            await r.control(Signal(stream_id=CLI_SID, name="INT"))
            await r.control(StdinClose(stream_id=CLI_SID))
            assert await agent.sent.receive() == Signal(stream_id=AGENT_SID, name="INT")
            assert await agent.sent.receive() == StdinClose(stream_id=AGENT_SID)
            r._up_send.close()
    assert r.stdin_window.outstanding == 10
    assert from_relay.statistics().current_buffer_used == 0

    with pytest.raises(ProtocolError) as info:
        await r.stdin(stdin[0])  # a repeat
    assert info.value.close_code == CloseCode.SEQUENCE
    late = DataFrame(stream_id=CLI_SID, channel=Channel.STDIN, seq=3, payload=b"x" * 11)
    with pytest.raises(ProtocolError) as info:
        await r.stdin(late)  # beyond the credit granted
    assert info.value.close_code == CloseCode.FLOW_CONTROL


@pytest.mark.parametrize("start", [exec_start(), LogsStart(stream_id=AGENT_SID)])
async def test_stdin_on_a_stream_started_without_it(start: ExecStart | LogsStart) -> None:
    r, _ = relay(start)
    with pytest.raises(ProtocolError) as info:
        await r.stdin(DataFrame(stream_id=CLI_SID, channel=Channel.STDIN, seq=0, payload=b"x"))
    assert str(info.value) == f"stream {CLI_SID} was not started with stdin"
    assert info.value.close_code == CloseCode.UNKNOWN_STREAM


async def test_cancel_cancels_the_stream_and_queues_nothing() -> None:
    r, _ = relay(exec_start())
    await r.control(StreamCancel(stream_id=CLI_SID))
    assert r._scope.cancel_called
    r._up_send.close()
    assert [item async for item in r._up_recv] == []


async def test_one_byte_of_credit_moves_one_byte() -> None:
    r, from_relay = relay(exec_start(), window=1)
    agent = FakeAgentStream([frame(b"ab"), LogsEnd(stream_id=AGENT_SID)])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r._downlink, agent)
            assert (await received_data(from_relay)).payload == b"a"
            r.grant(Credit(stream_id=CLI_SID, bytes=1))
            assert (await received_data(from_relay)).payload == b"b"
            assert await from_relay.receive() == LogsEnd(stream_id=CLI_SID)


@pytest.mark.parametrize("gone", ["agent side", "relay side"])
async def test_control_and_stdin_after_the_agent_stream_is_gone(gone: str) -> None:
    """The CLI reader never fails because the agent's stream ended first."""
    r, _ = relay(exec_start(stdin=True))
    if gone == "agent side":
        r._up_recv.close()  # the pump is gone: sends are BrokenResourceError
    else:
        r._up_send.close()  # the stream ended: sends are ClosedResourceError
    with trio.fail_after(10):
        await r.control(Signal(stream_id=CLI_SID, name="TERM"))
        await r.stdin(DataFrame(stream_id=CLI_SID, channel=Channel.STDIN, seq=0, payload=b"x"))
    assert r.stdin_window.outstanding == DEFAULT_WINDOW - 1


class GoneAgentStream(FakeAgentStream):
    def __init__(self, error: BaseException) -> None:
        super().__init__([])
        self.error = error

    async def send(self, item: Uplink, /) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("agent not connected"),
        trio.BrokenResourceError(),
        trio.ClosedResourceError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_the_uplink_ends_quietly_when_the_agent_stream_is_gone(error: BaseException) -> None:
    r, _ = relay(exec_start(stdin=True))
    await r.stdin(DataFrame(stream_id=CLI_SID, channel=Channel.STDIN, seq=0, payload=b"x"))
    with trio.fail_after(10):
        await r._uplink(GoneAgentStream(error))  # returns: the downlink reports the end
