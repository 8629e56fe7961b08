"""labd's side of the agent session, scripted: events in, actions out, no sockets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lab.errors import Unavailable
from lab.proto import Channel, CloseCode, DataFrame, ProtocolError, encode, encode_data
from lab.proto.hub_session import (
    CancelRemote,
    CheckRevoked,
    Claim,
    Close,
    Deliver,
    FindAgent,
    FindServer,
    HubSession,
    Phase,
    RecordHeartbeat,
    Register,
    RelayedStream,
    RenewLease,
    Report,
    Send,
    StdinCredit,
    WriteFacts,
    gives_way,
)
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    Heartbeat,
    Hello,
    LogsEnd,
    LogsStart,
    Ping,
    Pong,
    Response,
    Welcome,
)

HELLO = Hello(version="1.0", facts={"cpus": 2, "os": "hello"}, labels={"role": "web"})
EXEC = ExecStart(stream_id=7, argv=["true"])
LOGS = LogsStart(stream_id=9, unit="sshd")

Session = HubSession[RelayedStream]


def new_session(now: float = 0.0, serial: str = "02") -> Session:
    return Session(
        name="web1",
        serial=serial,
        session_id="s1",
        heartbeat_interval=10.0,
        facts_interval=60.0,
        now=now,
    )


def closed_with(actions: Sequence[object], code: CloseCode) -> Close:
    assert len(actions) == 1 and isinstance(actions[0], Close), actions
    assert actions[0].code == code, actions[0]
    return actions[0]


def hello_received(s: Session, now: float = 1.0) -> None:
    assert s.received(encode(HELLO), now) == [FindServer()]
    assert s.phase is Phase.ADMITTING


def admitted(now: float = 1.0, serial: str = "02") -> Session:
    """A session taken through the whole handshake; welcomed at ``now``."""
    s = new_session(0.0, serial)
    hello_received(s, now)
    assert s.server_found("srv-1", {"os": "stored", "disk": 9}) == [CheckRevoked()]
    assert s.revocation(False) == [FindAgent()]
    assert s.agent_found("02", None) == [Claim("02")]
    facts = {"os": "hello", "disk": 9, "cpus": 2}
    assert s.claimed(now) == [RenewLease(), WriteFacts(facts), Register("02")]
    assert s.registered() == [Send(Welcome(session_id="s1", heartbeat_interval=10.0))]
    assert s.phase is Phase.OPEN and s.welcomed
    return s


def exec_stream(s: Session, start: ExecStart | LogsStart = EXEC) -> RelayedStream:
    return s.open_stream(lambda sid: RelayedStream(start, sid, window=DEFAULT_WINDOW))


# --- the handshake ---


def test_a_new_session_knows_nothing_yet() -> None:
    s = new_session(now=5.0)
    assert s.phase is Phase.HELLO and not s.welcomed and not s.closing
    assert (s.server_id, s.version, s.facts, s.labels) == ("", "", {}, {})
    assert (s.close_code, s.close_reason) == (None, "")
    assert s.idle_for(5.0) == 0.0 and len(s.streams) == 0


def test_the_welcome_names_the_session_and_its_heartbeat_interval() -> None:
    s = Session(
        name="db1", serial="07", session_id="abc", heartbeat_interval=4.0, facts_interval=9.0, now=0
    )
    s.received(encode(Hello(version="2")), 1.0)
    s.server_found("srv-2", {})
    s.revocation(False)
    s.agent_found(None, None)
    s.claimed(1.0)
    assert s.registered() == [Send(Welcome(session_id="abc", heartbeat_interval=4.0))]
    assert s.next_deadline() == 13.0  # three intervals of 4 s after the hello


def test_handshake_asks_one_thing_at_a_time_and_ends_in_welcome() -> None:
    s = admitted()
    assert (s.server_id, s.version, s.labels) == ("srv-1", "1.0", {"role": "web"})
    assert s.facts == {"os": "hello", "disk": 9, "cpus": 2}  # the hello's facts win
    assert s.close_code is None and s.subject == "server/web1"


def test_no_agent_record_claims_without_a_current_serial() -> None:
    s = new_session()
    hello_received(s)
    s.server_found("srv-1", {})
    s.revocation(False)
    assert s.agent_found(None, None) == [Claim(None)]
    assert s.claimed(2.0)[-1] == Register(None)


def test_no_hello_in_time_is_a_policy_violation() -> None:
    s = new_session(now=100.0)
    assert s.next_deadline() == 110.0
    assert s.timer(109.9) == []
    close = closed_with(s.timer(110.0), CloseCode.POLICY_VIOLATION)
    assert close.reason == "no hello in time"
    assert close.error is not None and close.error.close_code == CloseCode.POLICY_VIOLATION
    assert close.error.message == "no hello in time"  # what the audit entry says
    assert s.phase is Phase.CLOSED and s.next_deadline() is None and s.timer(200.0) == []


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        (encode(Heartbeat()), CloseCode.PROTOCOL_ERROR, "expected hello, got heartbeat"),
        (
            encode_data(1, Channel.STDOUT, 0, b"x"),
            CloseCode.PROTOCOL_ERROR,
            "expected hello, got data frame",
        ),
        ("not json", CloseCode.PROTOCOL_ERROR, "not a JSON message"),
        ('{"type": "launch-missiles", "v": 1}', CloseCode.UNSUPPORTED_DATA, "unknown message"),
        (b"\x00\x00", CloseCode.PROTOCOL_ERROR, "shorter than its header"),
    ],
)
def test_anything_but_hello_first_is_a_protocol_error(
    first: str | bytes, code: CloseCode, reason: str
) -> None:
    s = new_session()
    close = closed_with(s.received(first, 1.0), code)
    assert reason in close.reason
    assert close.error is not None and close.error.message == close.reason  # audited
    assert s.received(encode(HELLO), 2.0) == []  # closed: nothing more is looked at


def test_an_unreadable_frame_is_a_protocol_error() -> None:
    s = new_session()
    close = closed_with(s.received(memoryview(b"x"), 1.0), CloseCode.PROTOCOL_ERROR)  # type: ignore[arg-type]
    assert close.reason == "empty or unreadable frame"


def test_unknown_server_is_a_reported_policy_violation() -> None:
    s = new_session()
    hello_received(s)
    close = closed_with(s.server_unknown(), CloseCode.POLICY_VIOLATION)
    assert close.reason == "server 'web1' is not registered"
    assert close.error is not None and close.error.close_code == CloseCode.POLICY_VIOLATION
    assert close.error.message == close.reason


def test_revoked_certificate_closes_with_4005_before_any_write() -> None:
    s = new_session()
    hello_received(s)
    s.server_found("srv-1", {})
    close = closed_with(s.revocation(True), CloseCode.REVOKED)
    assert close == Close(CloseCode.REVOKED, "certificate revoked")


def test_a_fresh_session_on_another_replica_refuses_with_4006() -> None:
    s = new_session()
    hello_received(s)
    s.server_found("srv-1", {})
    s.revocation(False)
    close = closed_with(s.agent_found("02", "replica-b"), CloseCode.DUPLICATE_SESSION)
    assert close.reason == "server/web1 has a live session on replica replica-b"
    assert close.error is None


def test_answers_after_a_close_do_nothing() -> None:
    """A revocation, the registry's refusal or a store failure may close the session while
    the driver is looking something up: the remaining answers are ignored."""
    s = new_session()
    hello_received(s)
    assert s.close(CloseCode.DUPLICATE_SESSION, "server/web1 already has a live session") == [
        Close(CloseCode.DUPLICATE_SESSION, "server/web1 already has a live session")
    ]
    assert s.server_found("srv-1", {}) == []
    assert s.server_unknown() == []
    assert s.revocation(False) == []
    assert s.agent_found("02", None) == []
    assert s.claimed(2.0) == []
    assert s.registered() == []
    assert s.phase is Phase.CLOSED and not s.welcomed


def test_answers_out_of_turn_are_a_driver_bug() -> None:
    s = new_session()
    with pytest.raises(RuntimeError, match="expected phase admitting, in hello"):
        s.server_found("srv-1", {})
    with pytest.raises(RuntimeError):
        s.registered()
    s = admitted()
    with pytest.raises(RuntimeError, match="in open"):
        s.claimed(3.0)


def test_no_deadline_while_the_driver_admits() -> None:
    s = new_session()
    hello_received(s, now=9.0)
    assert s.next_deadline() is None
    assert s.timer(1000.0) == []  # the hello came in time; the lookups have their own limits


# --- after the welcome ---


def test_silence_for_three_intervals_closes_with_4000() -> None:
    s = admitted(now=1.0)
    assert s.next_deadline() == 31.0
    assert s.received(encode(Heartbeat(version="1.0")), 25.0) == [RecordHeartbeat()]
    assert s.next_deadline() == 55.0  # from the last message, not from the hello
    assert s.timer(54.9) == []
    close = closed_with(s.timer(55.0), CloseCode.HEARTBEAT_TIMEOUT)
    assert close.reason == "no heartbeat for 30s" and close.error is None


def test_any_message_counts_as_a_sign_of_life() -> None:
    s = admitted(now=1.0)
    assert s.received(encode(Pong(nonce=1)), 20.0) == []
    assert s.idle_for(26.0) == 6.0
    assert s.next_deadline() == 50.0


def test_heartbeats_renew_the_lease_and_facts_at_most_every_interval() -> None:
    s = admitted(now=0.0)  # the facts were written at the welcome
    beat = Heartbeat(load=[0.5], uptime=3.0, memory_total=8, memory_available=4, version="1.1")
    assert s.received(encode(beat), 59.0) == [RecordHeartbeat()]
    assert s.version == "1.1"
    assert s.facts["load"] == [0.5] and s.facts["agent_version"] == "1.1"
    assert (s.facts["uptime"], s.facts["memory_total"], s.facts["memory_available"]) == (3.0, 8, 4)
    actions = s.received(encode(Heartbeat(uptime=4.0)), 60.0)
    assert actions[0] == RecordHeartbeat() and len(actions) == 2
    written = actions[1]
    assert isinstance(written, WriteFacts)
    assert written.facts["uptime"] == 4.0 and written.facts["agent_version"] == "1.1"
    assert written.facts["disk"] == 9  # the stored facts are kept
    assert s.received(encode(Heartbeat()), 119.0) == [RecordHeartbeat()]
    assert len(s.received(encode(Heartbeat()), 120.0)) == 2


def test_pings_are_answered_and_answers_ignored() -> None:
    s = admitted()
    assert s.received(encode(Ping(nonce=7)), 2.0) == [Send(Pong(nonce=7))]
    assert s.received(encode(Pong(nonce=3)), 2.0) == []
    assert s.received(encode(Response(request_id="r1")), 2.0) == []


def test_an_agent_error_without_a_stream_is_reported() -> None:
    s = admitted()
    error = Error(code="disk_full", message="no space")
    assert s.received(encode(error), 2.0) == [Report(error)]


@pytest.mark.parametrize(
    "msg",
    [
        Welcome(session_id="x"),
        Hello(version="again"),
        EXEC,
        LOGS,
    ],
)
def test_messages_only_labd_sends_are_protocol_errors(msg: object) -> None:
    s = admitted()
    close = closed_with(s.received(encode(msg), 2.0), CloseCode.PROTOCOL_ERROR)  # type: ignore[arg-type]
    assert close.reason.endswith("is not a message an agent sends")
    assert close.error is not None


def test_the_first_close_wins() -> None:
    s = admitted()
    assert s.close(CloseCode.REPLACED, "replaced") == [Close(CloseCode.REPLACED, "replaced")]
    assert s.close(CloseCode.REVOKED, "certificate revoked") == []
    assert (s.close_code, s.close_reason) == (CloseCode.REPLACED, "replaced")
    assert s.received(encode(Ping(nonce=1)), 3.0) == []
    assert s.next_deadline() is None and s.timer(1e9) == []


# --- streams ---


def test_streams_are_numbered_per_connection_and_renumbered_for_the_caller() -> None:
    s = admitted()
    first, second = exec_stream(s), exec_stream(s, LOGS)
    assert (first.agent_stream_id, second.agent_stream_id) == (1, 2)
    assert len(s.streams) == 2
    frame = encode_data(1, Channel.STDOUT, 0, b"out")
    [deliver] = s.received(frame, 2.0)
    assert deliver == Deliver(
        first, DataFrame(stream_id=7, channel=Channel.STDOUT, seq=0, payload=b"out")
    )
    assert s.received(encode(ExecStarted(stream_id=1, pid=42)), 2.0) == [
        Deliver(first, ExecStarted(stream_id=7, pid=42))
    ]
    [log_line] = s.received(encode_data(2, Channel.LOG, 0, b"line"), 2.0)
    assert isinstance(log_line, Deliver) and log_line.stream is second
    assert s.received(encode(LogsEnd(stream_id=2)), 2.0) == [Deliver(second, LogsEnd(stream_id=9))]
    assert second.finished and not second.active


def test_exec_exit_ends_the_stream_and_checks_the_byte_count() -> None:
    s = admitted()
    stream = exec_stream(s)
    s.received(encode_data(1, Channel.STDERR, 0, b"12345"), 2.0)
    [deliver] = s.received(encode(ExecExit(stream_id=1, code=3, bytes_out=5)), 2.0)
    assert deliver == Deliver(stream, ExecExit(stream_id=7, code=3, bytes_out=5))
    assert stream.finished
    close = closed_with(
        s.received(encode(ExecExit(stream_id=1, code=0)), 2.0), CloseCode.PROTOCOL_ERROR
    )
    assert close.reason == "exec-exit on stream 1 after it ended"


def test_an_exit_announcing_other_bytes_than_arrived_is_a_sequence_error() -> None:
    s = admitted()
    exec_stream(s)
    s.received(encode_data(1, Channel.STDOUT, 0, b"abc"), 2.0)
    close = closed_with(
        s.received(encode(ExecExit(stream_id=1, code=0, bytes_out=4)), 2.0), CloseCode.SEQUENCE
    )
    assert "announced 4 bytes, 3 arrived" in close.reason


def test_an_agent_error_ends_its_stream() -> None:
    s = admitted()
    stream = exec_stream(s)
    error = Error(stream_id=1, code="command_not_found", message="nope")
    assert s.received(encode(error), 2.0) == [
        Deliver(stream, Error(stream_id=7, code="command_not_found", message="nope"))
    ]
    assert stream.finished


@pytest.mark.parametrize(
    ("start", "item", "code", "reason"),
    [
        (EXEC, encode_data(1, Channel.LOG, 0, b"x"), CloseCode.UNSUPPORTED_DATA, "LOG is not"),
        (LOGS, encode_data(1, Channel.STDOUT, 0, b"x"), CloseCode.UNSUPPORTED_DATA, "STDOUT"),
        (EXEC, encode_data(1, Channel.STDIN, 0, b"x"), CloseCode.UNSUPPORTED_DATA, "STDIN"),
        (EXEC, encode_data(1, Channel.STDOUT, 1, b"x"), CloseCode.SEQUENCE, "sequence gap"),
        (EXEC, encode_data(2, Channel.STDOUT, 0, b"x"), CloseCode.UNKNOWN_STREAM, "never"),
        (EXEC, encode(ExecStarted(stream_id=5, pid=1)), CloseCode.UNKNOWN_STREAM, "never"),
        (EXEC, encode(Credit(stream_id=3, bytes=1)), CloseCode.UNKNOWN_STREAM, "never"),
        (EXEC, encode(LogsEnd(stream_id=1)), CloseCode.PROTOCOL_ERROR, "logs-end on exec"),
        (LOGS, encode(ExecStarted(stream_id=1, pid=1)), CloseCode.PROTOCOL_ERROR, "log stream"),
        (LOGS, encode(ExecExit(stream_id=1, code=0)), CloseCode.PROTOCOL_ERROR, "log stream"),
        (EXEC, encode(Credit(stream_id=1, bytes=2**31)), CloseCode.FLOW_CONTROL, "out of range"),
    ],
)
def test_stream_items_that_break_the_protocol_close_the_session(
    start: ExecStart | LogsStart, item: str | bytes, code: CloseCode, reason: str
) -> None:
    s = admitted()
    exec_stream(s, start)
    close = closed_with(s.received(item, 2.0), code)
    assert reason in close.reason and close.error is not None


def test_output_beyond_the_credit_is_a_flow_control_error() -> None:
    s = admitted()
    stream = s.open_stream(lambda sid: RelayedStream(EXEC, sid, window=4))
    assert len(s.received(encode_data(1, Channel.STDOUT, 0, b"1234"), 2.0)) == 1
    closed_with(s.received(encode_data(1, Channel.STDOUT, 1, b"5"), 2.0), CloseCode.FLOW_CONTROL)
    assert stream.input.bytes_in == 4


def test_stdin_credit_is_counted_and_wakes_the_writer() -> None:
    s = admitted()
    stream = s.open_stream(lambda sid: RelayedStream(EXEC, sid, window=10))
    assert s.received(encode(Credit(stream_id=1, bytes=5)), 2.0) == [StdinCredit(stream)]
    assert stream.stdin.window.available == 15


def test_stdin_is_framed_with_the_agent_stream_id_within_its_credit() -> None:
    s = admitted()
    exec_stream(s)
    stream = exec_stream(s)
    frame, rest = stream.stdin.chunk(Channel.STDIN, memoryview(b"input"))
    assert frame == encode_data(2, Channel.STDIN, 0, b"input") and not rest
    assert stream.stdin.window.available == DEFAULT_WINDOW - 5


def test_a_stream_the_caller_left_drops_late_items_and_is_cancelled_once() -> None:
    s = admitted()
    stream = exec_stream(s)
    assert s.end_stream(stream) == [CancelRemote(1)]
    assert len(s.streams) == 0
    for late in (
        encode_data(1, Channel.STDOUT, 0, b"late"),
        encode(ExecExit(stream_id=1, code=0)),
        encode(Credit(stream_id=1, bytes=1)),
    ):
        assert s.received(late, 2.0) == []
    assert s.close_code is None


def test_ending_a_finished_or_aborted_stream_sends_no_cancel() -> None:
    s = admitted()
    finished, aborted = exec_stream(s), exec_stream(s)
    s.received(encode(ExecExit(stream_id=1, code=0)), 2.0)
    assert s.end_stream(finished) == []
    assert aborted.abort("unavailable", "labd is shutting down")
    assert aborted.aborted == Error(
        stream_id=7, code="unavailable", message="labd is shutting down"
    )
    assert not aborted.abort("cancelled", "again")  # the first end stands
    assert s.end_stream(aborted) == []


def test_a_closing_session_opens_no_stream_and_cancels_none() -> None:
    s = admitted()
    stream = exec_stream(s)
    s.close(CloseCode.GOING_AWAY, "labd is shutting down")
    with pytest.raises(Unavailable) as info:
        exec_stream(s)
    assert info.value.message == "agent not connected"
    assert info.value.details == {"server": "web1"}
    assert s.end_stream(stream) == []  # the agent kills every stream of the connection


# --- who gives way to a second session of one server ---


def test_a_live_session_does_not_give_way_to_a_second_holder() -> None:
    old = admitted(now=10.0, serial="01")
    assert not gives_way(old, "01", "01", now=25.0)  # 15 s of silence: not yet stale
    assert gives_way(old, "01", "01", now=25.1)
    assert not gives_way(old, "01", None, now=11.0)


def test_a_closing_session_gives_way() -> None:
    old = admitted(now=10.0)
    old.close(CloseCode.HEARTBEAT_TIMEOUT, "no heartbeat")
    assert gives_way(old, "02", None, now=10.0)


def test_the_current_certificate_takes_over_from_an_old_one() -> None:
    old = admitted(now=10.0, serial="01")
    assert gives_way(old, "02", "02", now=10.0)  # renewed or re-enrolled: the new serial wins
    assert not gives_way(old, "03", "02", now=10.0)  # neither holds the current one
    current = admitted(now=10.0, serial="02")
    assert not gives_way(current, "02", "02", now=10.0)  # the old one holds it already


def test_a_silent_session_counts_its_silence_from_the_last_message() -> None:
    old = admitted(now=0.0)
    old.received(encode(Heartbeat()), 20.0)
    assert not gives_way(old, "02", None, now=35.0)
    assert gives_way(old, "02", None, now=35.5)


def test_protocol_errors_carry_their_close_code_for_the_audit() -> None:
    s = admitted()
    close = closed_with(s.received("{}", 2.0), CloseCode.PROTOCOL_ERROR)
    assert isinstance(close.error, ProtocolError)
    assert close.error.details["close_code"] == int(CloseCode.PROTOCOL_ERROR)


def test_the_driver_reads_nothing_while_it_admits() -> None:
    s = new_session()
    hello_received(s)
    with pytest.raises(RuntimeError, match="received\\(\\) in phase admitting"):
        s.received(encode(Heartbeat()), 2.0)
