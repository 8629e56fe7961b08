from __future__ import annotations

import pytest

from lab.proto import CloseCode
from lab.proto.messages import (
    ExecStart,
    Hello,
    Ping,
    Pong,
    ServerShutdown,
    Welcome,
)
from lab.proto.session import (
    AgentSession,
    Backoff,
    Close,
    Connect,
    Deliver,
    Send,
    SendHeartbeat,
    State,
)

HELLO = Hello(version="1.0", facts={"cpus": 2}, labels={"role": "worker"})


class Rand:
    """A scripted random source."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0) if self.values else 1.0


def connected_session(now: float = 0.0, rand: Rand | None = None) -> AgentSession:
    s = AgentSession(HELLO, random=rand or Rand())
    assert s.start(now) == [Connect()]
    assert s.connected(now) == [Send(HELLO)]
    assert s.received(Welcome(session_id="s1", heartbeat_interval=10.0), now) == []
    return s


def test_handshake_then_heartbeats_on_deadline() -> None:
    s = AgentSession(HELLO, random=Rand())
    assert s.state is State.DISCONNECTED and s.next_deadline() is None
    assert s.start(100.0) == [Connect()]
    assert s.state is State.CONNECTING
    assert s.connected(100.5) == [Send(HELLO)]
    assert s.received(Welcome(session_id="s1", heartbeat_interval=10.0), 101.0) == []
    assert s.state is State.CONNECTED and s.session_id == "s1"
    assert s.next_deadline() == 111.0
    assert s.timer(110.9) == []
    assert s.timer(111.0) == [SendHeartbeat()]
    assert s.next_deadline() == 121.0
    # A late wakeup sends one heartbeat and reschedules from now, not a burst.
    assert s.timer(150.0) == [SendHeartbeat()]
    assert s.timer(150.0) == []
    assert s.next_deadline() == 160.0


def test_messages_after_welcome_are_delivered_and_pings_answered() -> None:
    s = connected_session()
    start = ExecStart(stream_id=1, argv=["true"])
    assert s.received(start, 1.0) == [Deliver(start)]
    assert s.received(Ping(nonce=3), 1.0) == [Send(Pong(nonce=3))]


def test_message_before_welcome_closes_with_protocol_error() -> None:
    s = AgentSession(HELLO, random=Rand(0.5))
    s.start(0.0)
    s.connected(0.0)
    cmds = s.received(ExecStart(stream_id=1, argv=["true"]), 0.0)
    assert cmds == [Close(CloseCode.PROTOCOL_ERROR, "exec-start before welcome")]
    assert s.state is State.RECONNECTING and s.next_deadline() == 0.5


def test_no_welcome_in_time_gives_up_the_attempt() -> None:
    s = AgentSession(HELLO, random=Rand(0.25), connect_timeout=10.0)
    s.start(0.0)
    assert s.next_deadline() == 10.0
    assert s.timer(9.0) == []
    assert s.timer(10.0) == [Close(CloseCode.POLICY_VIOLATION, "no welcome in time")]
    assert s.state is State.RECONNECTING and s.next_deadline() == 10.25


def test_exponential_backoff_with_full_jitter_capped_at_30s() -> None:
    rand = Rand(*([1.0] * 8))
    s = AgentSession(HELLO, random=rand)
    s.start(0.0)
    now = 0.0
    delays = []
    for _ in range(8):
        assert s.connection_lost(now) == []
        assert s.state is State.RECONNECTING
        deadline = s.next_deadline()
        assert deadline is not None
        delays.append(deadline - now)
        now = deadline
        assert s.timer(now) == [Connect()]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_jitter_scales_the_ceiling() -> None:
    b = Backoff(Rand(0.5, 0.0, 0.25))
    assert [b.next_delay(), b.next_delay(), b.next_delay()] == [0.5, 0.0, 1.0]


def test_welcome_resets_the_backoff() -> None:
    s = AgentSession(HELLO, random=Rand())
    s.start(0.0)
    for _ in range(4):
        s.connection_lost(0.0)
        s.timer(100.0)
    s.connected(100.0)
    s.received(Welcome(session_id="x"), 100.0)
    s.connection_lost(100.0)
    assert s.next_deadline() == 101.0


def test_server_shutdown_retry_after_is_honoured() -> None:
    s = connected_session(rand=Rand(0.5))
    assert s.received(ServerShutdown(retry_after=20.0), 5.0) == [
        Close(CloseCode.GOING_AWAY, "server shutdown")
    ]
    assert s.connection_lost(6.0) == []
    # Never sooner than retry_after; jitter within one step (here half of 20 s).
    assert s.next_deadline() == 6.0 + 20.0 + 10.0
    assert s.timer(35.9) == []
    assert s.timer(36.0) == [Connect()]
    # The hint applies once; the next loss uses ordinary backoff.
    s.connection_lost(40.0)
    assert s.next_deadline() == 41.0


def test_stop_closes_an_open_connection_and_stays_stopped() -> None:
    s = connected_session()
    assert s.stop() == [Close(CloseCode.NORMAL, "agent stopping")]
    assert s.state is State.STOPPED and s.next_deadline() is None
    assert s.connection_lost(1.0) == []
    assert s.state is State.STOPPED
    assert s.received(Ping(), 1.0) == []


def test_events_out_of_order_are_programming_errors() -> None:
    s = AgentSession(HELLO, random=Rand())
    with pytest.raises(RuntimeError):
        s.connected(0.0)
    s.start(0.0)
    with pytest.raises(RuntimeError):
        s.start(0.0)


def test_second_welcome_is_a_protocol_error() -> None:
    s = connected_session()
    cmds = s.received(Welcome(session_id="again"), 1.0)
    assert cmds == [Close(CloseCode.PROTOCOL_ERROR, "second welcome")]
    assert s.state is State.RECONNECTING


def test_a_refused_identity_waits_minutes_then_backs_off_as_usual() -> None:
    s = AgentSession(HELLO, random=Rand(0.0, 0.5, 1.0), refused_backoff=300.0)
    s.start(0.0)
    s.connection_lost(0.0, refused=True)
    assert s.state is State.RECONNECTING and s.next_deadline() == 300.0
    assert s.timer(300.0) == [Connect()]
    s.connection_lost(300.0, refused=True)
    assert s.next_deadline() == 300.0 + 450.0  # jitter up to twice the base
    assert s.timer(750.0) == [Connect()]
    s.connection_lost(750.0)  # an ordinary failure: the usual 1-30 s backoff
    assert s.next_deadline() == 751.0
