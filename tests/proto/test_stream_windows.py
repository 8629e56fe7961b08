"""Both credit windows with balances that are not zero, their bounds, and the exact errors.

Credit adds to what is unspent (a grant that replaced the balance would lose or invent credit),
byte counters add up across frames, and every refusal names its numbers and close code.
"""

from __future__ import annotations

import pytest

from lab.proto import Channel, CloseCode, ProtocolError, decode_data
from lab.proto.messages import DEFAULT_WINDOW, Credit, ExecExit
from lab.proto.streams import (
    GROWN_WINDOW,
    MAX_WINDOW,
    WINDOW_BUDGET,
    InputStream,
    OutputStream,
    ReceiveWindow,
    SendWindow,
    SequenceCheck,
    grown_window,
)


def test_send_window_adds_grants_to_unspent_credit() -> None:
    w = SendWindow(100)
    w.consume(30)
    assert w.available == 70
    w.grant(5)
    assert w.available == 75
    w.consume(75)
    assert w.available == 0
    w.grant(1)
    assert w.available == 1


def test_send_window_refuses_overspending_with_the_numbers() -> None:
    w = SendWindow(10)
    w.consume(4)
    with pytest.raises(ProtocolError) as info:
        w.consume(7)
    assert str(info.value) == "sending 7 bytes with only 6 bytes of credit"
    assert info.value.close_code == CloseCode.FLOW_CONTROL
    assert w.available == 6
    w.consume(6)  # all of it is allowed


@pytest.mark.parametrize(("start", "grant"), [(0, 0), (5, -1), (MAX_WINDOW - 9, 10), (1, 2**31)])
def test_send_window_refuses_grants_out_of_range(start: int, grant: int) -> None:
    w = SendWindow(start)
    with pytest.raises(ProtocolError) as info:
        w.grant(grant)
    assert str(info.value) == f"credit of {grant} bytes is out of range"
    assert info.value.close_code == CloseCode.FLOW_CONTROL
    assert w.available == start


def test_send_window_may_reach_max_window_exactly() -> None:
    w = SendWindow(MAX_WINDOW - 10)
    w.grant(10)
    assert w.available == MAX_WINDOW
    w = SendWindow(5)
    w.grant(1)
    assert w.available == 6


def test_receive_window_counts_what_the_peer_may_still_send() -> None:
    r = ReceiveWindow(100)
    r.received(40)
    r.received(10)
    assert r.outstanding == 50
    r.grant(7)
    assert r.outstanding == 57
    with pytest.raises(ProtocolError) as info:
        r.received(58)
    assert str(info.value) == "peer sent 58 bytes with only 57 bytes of credit"
    assert info.value.close_code == CloseCode.FLOW_CONTROL
    r.received(57)
    assert r.outstanding == 0


@pytest.mark.parametrize(("start", "grant"), [(10, 0), (10, -3), (MAX_WINDOW - 9, 10)])
def test_receive_window_refuses_grants_out_of_range(start: int, grant: int) -> None:
    r = ReceiveWindow(start)
    with pytest.raises(ValueError, match=f"^credit of {grant} bytes is out of range$"):
        r.grant(grant)
    assert r.outstanding == start


def test_receive_window_grants_one_byte_and_up_to_max_window() -> None:
    r = ReceiveWindow(10)
    r.grant(1)
    assert r.outstanding == 11
    r.grant(MAX_WINDOW - 11)
    assert r.outstanding == MAX_WINDOW


def test_receive_window_grants_back_once_half_a_window_is_read() -> None:
    r = ReceiveWindow(90)
    r.received(90)
    assert r.consumed(44) == 0  # 44 * 2 < 90
    assert r.consumed(1) == 45  # exactly half: granted
    assert (r.outstanding, r.unacknowledged) == (45, 0)
    r.received(10)  # 35 left
    assert r.consumed(40) == 0
    assert r.consumed(5) == 45  # added to the unspent 35, and counted again from zero
    assert (r.outstanding, r.unacknowledged) == (80, 0)
    assert r.consumed(44) == 0
    assert r.unacknowledged == 44


def test_output_stream_counts_and_numbers_across_frames() -> None:
    out = OutputStream(3, channels=(Channel.STDOUT,), window=20)
    assert out.exited is False
    frames = [decode_data(out.data(Channel.STDOUT, p)) for p in (b"abc", b"", b"defg")]
    assert [(f.seq, f.payload) for f in frames] == [(0, b"abc"), (1, b""), (2, b"defg")]
    assert out.bytes_out == 7
    assert out.window.available == 13
    out.grant(Credit(stream_id=3, bytes=2))
    assert out.window.available == 15
    with pytest.raises(ProtocolError, match=r"^channel STDERR of stream 3 is closed$"):
        out.data(Channel.STDERR, b"x")
    assert not out.at_eof
    out.eof(Channel.STDOUT)
    assert out.at_eof


def test_output_stream_exit_carries_everything() -> None:
    out = OutputStream(4, channels=())
    assert out.exit(code=3) == ExecExit(
        stream_id=4, code=3, signal=None, bytes_out=0, bytes_dropped=0, timed_out=False
    )
    assert out.exited is True
    with pytest.raises(ProtocolError) as info:
        out.exit(code=3)
    assert str(info.value) == "stream 4 already exited"
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR

    out = OutputStream(5)
    out.data(Channel.STDERR, b"xy")
    with pytest.raises(ProtocolError) as info:
        out.exit(code=0)
    assert str(info.value) == "exec-exit on stream 5 before EOF of STDERR, STDOUT"
    assert info.value.close_code == CloseCode.INTERNAL_ERROR
    out.eof(Channel.STDOUT)
    out.eof(Channel.STDERR)
    assert out.exit(signal="KILL", bytes_dropped=9, timed_out=True) == ExecExit(
        stream_id=5, code=None, signal="KILL", bytes_out=2, bytes_dropped=9, timed_out=True
    )


def test_input_stream_counts_across_frames_and_checks_the_total() -> None:
    out, inp = OutputStream(7, window=100), InputStream(7, window=100)
    for payload in (b"ab", b"cde", b"f"):
        assert inp.received(decode_data(out.data(Channel.STDOUT, payload))) == payload
    assert inp.bytes_in == 6
    assert inp.window.outstanding == 94
    with pytest.raises(ProtocolError) as info:
        inp.exited(ExecExit(stream_id=7, code=0, bytes_out=5))
    assert str(info.value) == "stream 7 announced 5 bytes, 6 arrived"
    assert info.value.close_code == CloseCode.SEQUENCE
    assert inp.exit is None
    done = ExecExit(stream_id=7, code=0, bytes_out=6)
    inp.exited(done)
    assert inp.exit == done
    with pytest.raises(ProtocolError) as info:
        inp.exited(done)
    assert str(info.value) == "second exec-exit on stream 7"
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    with pytest.raises(ProtocolError) as info:
        inp.received(decode_data(OutputStream(7).data(Channel.STDOUT, b"z")))
    assert str(info.value) == "data on stream 7 after exec-exit"


def test_input_stream_refuses_a_foreign_frame_by_name() -> None:
    inp = InputStream(1)
    with pytest.raises(ProtocolError) as info:
        inp.received(decode_data(OutputStream(2).data(Channel.STDOUT, b"x")))
    assert str(info.value) == "frame for stream 2 given to stream 1"
    assert info.value.close_code == CloseCode.UNKNOWN_STREAM
    assert inp.bytes_in == 0


def test_input_stream_explicit_grant_adds_credit_and_says_so() -> None:
    inp = InputStream(6, window=10)
    inp.received(decode_data(OutputStream(6).data(Channel.STDOUT, b"x" * 4)))
    assert inp.grant(5) == Credit(stream_id=6, bytes=5)
    assert inp.window.outstanding == 11
    with pytest.raises(ValueError):
        inp.grant(0)
    assert inp.consumed(4) is None
    assert inp.consumed(1) == Credit(stream_id=6, bytes=5)


def test_sequence_errors_name_the_kind_and_numbers() -> None:
    check = SequenceCheck()
    first = decode_data(OutputStream(8).data(Channel.STDOUT, b"a"))
    check.check(first)
    with pytest.raises(ProtocolError) as info:
        check.check(first)
    assert str(info.value) == "sequence duplicate on stream 8 channel STDOUT: got 0, expected 1"
    assert info.value.close_code == CloseCode.SEQUENCE
    out = OutputStream(8)
    for _ in range(3):
        frame = decode_data(out.data(Channel.STDERR, b"b"))
    with pytest.raises(ProtocolError) as info:
        check.check(frame)
    assert str(info.value) == "sequence gap on stream 8 channel STDERR: got 2, expected 0"


@pytest.mark.parametrize(
    ("concurrent", "window"),
    [
        (0, GROWN_WINDOW),
        (1, GROWN_WINDOW),
        (2, GROWN_WINDOW),
        (3, 2_796_202),
        (5, 1_677_721),
        (31, 270_600),
        (32, DEFAULT_WINDOW),
        (33, DEFAULT_WINDOW),
        (10_000, DEFAULT_WINDOW),
    ],
)
def test_grown_window_is_the_budget_share_between_the_bounds(concurrent: int, window: int) -> None:
    assert (GROWN_WINDOW, WINDOW_BUDGET, DEFAULT_WINDOW) == (4 << 20, 8 << 20, 256 << 10)
    got = grown_window(concurrent)
    assert got == window and type(got) is int
