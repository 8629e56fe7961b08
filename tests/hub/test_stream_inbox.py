"""labd's HubStream inbox: what the agent connection's reader delivers, as the caller reads it."""

from __future__ import annotations

from lab.labd.hub.stream import MERGE_LIMIT, HubStream
from lab.proto import Channel, DataFrame
from lab.proto.messages import ExecExit, ExecStart, LogsStart, Message


class Session:
    """The agent connection seam: a name, and what the stream queues for the agent."""

    name = "alpha"

    def __init__(self) -> None:
        self.sent: list[Message | bytes] = []

    async def enqueue(self, item: Message | bytes, /) -> None:
        self.sent.append(item)


def exec_stream() -> HubStream:
    return HubStream(Session(), ExecStart(stream_id=7, argv=["cat"]), 3, window=1 << 22)


def frame(seq: int, payload: bytes, channel: Channel = Channel.STDOUT) -> DataFrame:
    return DataFrame(stream_id=7, channel=channel, seq=seq, payload=payload)


async def test_a_frame_read_before_the_next_is_handed_on_as_it_arrived() -> None:
    stream = exec_stream()
    payload = bytes(range(256)) * 1024
    stream.deliver(frame(0, payload))
    item = await stream.__anext__()
    assert isinstance(item, DataFrame)
    assert item.payload is payload  # no copy on the bulk path
    assert (item.stream_id, item.channel, item.seq) == (7, Channel.STDOUT, 0)


async def test_frames_waiting_together_are_merged_in_order_per_channel() -> None:
    stream = exec_stream()
    stream.deliver(frame(0, b"one "))
    stream.deliver(frame(1, b"two "))
    stream.deliver(frame(0, b"err", Channel.STDERR))
    stream.deliver(frame(2, b"three"))
    stream.deliver(ExecExit(stream_id=3, code=0, bytes_out=0))
    items = [item async for item in stream]
    assert [(type(i).__name__, getattr(i, "payload", None)) for i in items] == [
        ("DataFrame", b"one two "),
        ("DataFrame", b"err"),
        ("DataFrame", b"three"),
        ("ExecExit", None),
    ]
    merged = items[0]
    assert isinstance(merged, DataFrame) and isinstance(merged.payload, bytes)
    assert merged.seq == 0  # the first frame's


async def test_merging_stops_at_the_limit() -> None:
    stream = exec_stream()
    half = b"x" * (MERGE_LIMIT // 2 + 1)
    stream.deliver(frame(0, half))
    stream.deliver(frame(1, half))
    first, second = await stream.__anext__(), await stream.__anext__()
    assert isinstance(first, DataFrame) and isinstance(second, DataFrame)
    assert (first.payload, first.seq, second.payload, second.seq) == (half, 0, half, 1)


async def test_log_lines_stay_one_frame_each() -> None:
    start = LogsStart(stream_id=7, unit="x")
    stream = HubStream(Session(), start, 3, window=1 << 20)
    stream.deliver(frame(0, b"line 1", Channel.LOG))
    stream.deliver(frame(1, b"line 2", Channel.LOG))
    first, second = await stream.__anext__(), await stream.__anext__()
    assert isinstance(first, DataFrame) and isinstance(second, DataFrame)
    assert (first.payload, second.payload) == (b"line 1", b"line 2")
