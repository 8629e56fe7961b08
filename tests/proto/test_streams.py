from __future__ import annotations

import pytest

from lab.proto import Channel, CloseCode, ProtocolError, decode_data
from lab.proto.messages import Credit, ExecExit
from lab.proto.streams import InputStream, OutputStream, ReceiveWindow, SendWindow


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
