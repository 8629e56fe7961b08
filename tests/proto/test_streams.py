from __future__ import annotations

import pytest

from lab.proto import Channel, CloseCode, DataFrame, ProtocolError, decode_data
from lab.proto.frames import MAX_PAYLOAD
from lab.proto.messages import Credit, ExecExit
from lab.proto.streams import (
    InputStream,
    OutputStream,
    ReceiveWindow,
    SendWindow,
    StreamTable,
)


def test_sender_spends_only_granted_credit() -> None:
    out = OutputStream(1, window=10)
    out.data(Channel.STDOUT, b"12345")
    out.data(Channel.STDERR, b"12345")
    assert out.window.available == 0
    with pytest.raises(ProtocolError) as info:
        out.data(Channel.STDOUT, b"x")
    assert info.value.close_code == CloseCode.FLOW_CONTROL
    out.grant(Credit(stream_id=1, bytes=3))
    out.data(Channel.STDOUT, b"abc")
    assert out.window.available == 0


def test_sequence_numbers_are_per_channel() -> None:
    out = OutputStream(9)
    frames = [
        decode_data(out.data(ch, b"x"))
        for ch in (Channel.STDOUT, Channel.STDERR, Channel.STDOUT, Channel.STDOUT)
    ]
    assert [(f.channel, f.seq) for f in frames] == [
        (Channel.STDOUT, 0),
        (Channel.STDERR, 0),
        (Channel.STDOUT, 1),
        (Channel.STDOUT, 2),
    ]
    assert all(f.stream_id == 9 for f in frames)


def test_exit_only_after_every_channel_reached_eof() -> None:
    out = OutputStream(1)
    out.data(Channel.STDOUT, b"hello")
    with pytest.raises(ProtocolError, match="STDERR, STDOUT"):
        out.exit(code=0)
    out.eof(Channel.STDOUT)
    with pytest.raises(ProtocolError, match="STDERR"):
        out.exit(code=0)
    with pytest.raises(ProtocolError, match="closed"):
        out.data(Channel.STDOUT, b"late")
    out.eof(Channel.STDERR)
    assert out.exit(code=0, bytes_dropped=3) == ExecExit(
        stream_id=1, code=0, bytes_out=5, bytes_dropped=3
    )
    with pytest.raises(ProtocolError):
        out.exit(code=0)


def test_receiver_checks_sequence() -> None:
    out, inp = OutputStream(1), InputStream(1)
    f0 = decode_data(out.data(Channel.STDOUT, b"a"))
    f1 = decode_data(out.data(Channel.STDOUT, b"b"))
    f2 = decode_data(out.data(Channel.STDOUT, b"c"))
    assert inp.received(f0) == b"a"
    with pytest.raises(ProtocolError, match="gap") as info:
        inp.received(f2)
    assert info.value.close_code == CloseCode.SEQUENCE
    assert inp.received(f1) == b"b"
    with pytest.raises(ProtocolError, match="duplicate"):
        inp.received(f1)


def test_receiver_rejects_credit_overrun_and_foreign_streams() -> None:
    inp = InputStream(1, window=4)
    out = OutputStream(1, window=100)  # a sender that ignores our window
    inp.received(decode_data(out.data(Channel.STDOUT, b"abcd")))
    with pytest.raises(ProtocolError) as info:
        inp.received(decode_data(out.data(Channel.STDOUT, b"e")))
    assert info.value.close_code == CloseCode.FLOW_CONTROL
    with pytest.raises(ProtocolError) as info:
        inp.received(decode_data(OutputStream(2).data(Channel.STDOUT, b"x")))
    assert info.value.close_code == CloseCode.UNKNOWN_STREAM


def test_receiver_grants_credit_in_batches_as_consumer_reads() -> None:
    inp = InputStream(1, window=100)
    out = OutputStream(1, window=100)
    inp.received(decode_data(out.data(Channel.STDOUT, b"x" * 100)))
    assert inp.consumed(30) is None
    credit = inp.consumed(20)
    assert credit == Credit(stream_id=1, bytes=50)
    out.grant(credit)
    inp.received(decode_data(out.data(Channel.STDOUT, b"y" * 50)))
    assert out.window.available == 0


def test_exit_must_match_bytes_received_and_ends_the_stream() -> None:
    out, inp = OutputStream(1), InputStream(1)
    inp.received(decode_data(out.data(Channel.STDOUT, b"abc")))
    with pytest.raises(ProtocolError):
        inp.exited(ExecExit(stream_id=1, code=0, bytes_out=2))
    out.eof(Channel.STDOUT)
    out.eof(Channel.STDERR)
    inp.exited(out.exit(code=0))
    assert inp.exit is not None and inp.exit.bytes_out == 3
    with pytest.raises(ProtocolError, match="after exec-exit"):
        inp.received(decode_data(OutputStream(1).data(Channel.STDOUT, b"z")))


def test_window_bounds() -> None:
    w = SendWindow(0)
    with pytest.raises(ProtocolError):
        w.grant(0)
    with pytest.raises(ProtocolError):
        w.grant(2**31)
    r = ReceiveWindow(10)
    with pytest.raises(ValueError):
        r.grant(-1)


def test_grown_window_shares_a_budget_between_the_protocol_window_and_the_cap() -> None:
    from lab.proto.messages import DEFAULT_WINDOW
    from lab.proto.streams import GROWN_WINDOW, WINDOW_BUDGET, grown_window

    assert grown_window(1) == GROWN_WINDOW
    assert grown_window(2) == min(GROWN_WINDOW, WINDOW_BUDGET // 2)
    assert grown_window(10_000) == DEFAULT_WINDOW
    assert grown_window(0) == GROWN_WINDOW


def test_chunk_frames_what_the_credit_allows_and_returns_the_rest() -> None:
    out = OutputStream(4, (Channel.STDIN,), window=5)
    frame, rest = out.chunk(Channel.STDIN, memoryview(b"abcdefgh"))
    assert decode_data(frame) == DataFrame(
        stream_id=4, channel=Channel.STDIN, seq=0, payload=b"abcde"
    )
    assert bytes(rest) == b"fgh" and out.window.available == 0
    with pytest.raises(ProtocolError, match="no credit left on stream 4") as info:
        out.chunk(Channel.STDIN, rest)
    assert info.value.close_code == CloseCode.FLOW_CONTROL
    out.grant(Credit(stream_id=4, bytes=10))
    frame, rest = out.chunk(Channel.STDIN, rest)
    assert decode_data(frame) == DataFrame(
        stream_id=4, channel=Channel.STDIN, seq=1, payload=b"fgh"
    )
    assert len(rest) == 0 and out.window.available == 7


def test_chunk_never_exceeds_the_largest_payload() -> None:
    out = OutputStream(1, (Channel.STDIN,), window=3 * MAX_PAYLOAD)
    frame, rest = out.chunk(Channel.STDIN, memoryview(bytes(MAX_PAYLOAD + 1)))
    assert len(decode_data(frame).payload) == MAX_PAYLOAD and len(rest) == 1


def test_stream_table_ids_ascend_and_are_never_reused() -> None:
    table = StreamTable[str]()
    assert table.next_id == 1 and len(table) == 0
    assert table.open(table.next_id, "one") == "one"
    assert table.next_id == 2
    table.open(5, "five")  # a peer's numbering may skip
    assert table.highest == 5 and table.next_id == 6
    for used in (5, 3, 1, 0):
        with pytest.raises(ProtocolError, match=f"stream {used} was already started") as info:
            table.open(used, "again")
        assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert table.values() == ["one", "five"] and list(table) == ["one", "five"]


def test_stream_table_tells_an_ended_stream_from_one_never_opened() -> None:
    table = StreamTable[str]()
    table.open(1, "one")
    table.open(2, "two")
    assert table.get(1) == "one"
    assert table.close(1) == "one"
    assert table.close(1) is None
    assert table.get(1) is None  # ended here: late items are dropped
    assert table.get(2) == "two"
    for never in (3, 4):
        with pytest.raises(ProtocolError, match=f"stream {never} was never opened") as info:
            table.get(never)
        assert info.value.close_code == CloseCode.UNKNOWN_STREAM
    assert len(table) == 1 and bool(table)
    table.close(2)
    assert len(table) == 0 and not table
    assert table.get(2) is None  # the highest id, ended: still not "never opened"


def test_stream_table_require_refuses_anything_not_open() -> None:
    table = StreamTable[str]()
    table.open(1, "one")
    table.open(2, "two")
    table.close(1)
    assert table.require(2) == "two"
    for stream_id in (1, 3, 0, None):
        with pytest.raises(ProtocolError, match=f"no stream {stream_id}") as info:
            table.require(stream_id)
        assert info.value.close_code == CloseCode.UNKNOWN_STREAM


def test_iterating_a_stream_table_allows_closing_while_iterating() -> None:
    table = StreamTable[int]()
    for i in (1, 2, 3):
        table.open(i, i)
    for entry in table:
        table.close(entry)
    assert len(table) == 0
