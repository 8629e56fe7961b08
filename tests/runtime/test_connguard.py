"""The connection guard's decisions and its bounded log, without sockets (fake clock)."""

from __future__ import annotations

import logging

import pytest

from lab.runtime.connguard import BoundedLog, ConnectionGuard, ConnectionLimits


def test_per_address_cap_counts_and_releases() -> None:
    refused: list[str] = []
    guard = ConnectionGuard(
        ConnectionLimits(max_unauthenticated_per_address=2), on_refused=refused.append
    )
    assert guard.admit("10.0.0.1") and guard.admit("10.0.0.1")
    assert not guard.admit("10.0.0.1")
    assert guard.admit("10.0.0.2")  # another address has its own budget
    assert refused == ["per_address_limit"]
    assert guard.unauthenticated("10.0.0.1") == 2 and guard.unauthenticated() == 3
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.1")
    for _ in range(3):
        guard.release("10.0.0.1")
    guard.release("10.0.0.2")
    assert guard.unauthenticated() == 0


def test_zero_turns_the_cap_off() -> None:
    guard = ConnectionGuard(ConnectionLimits(max_unauthenticated_per_address=0))
    assert all(guard.admit("10.0.0.1") for _ in range(1000))


def test_bounded_log_says_how_many_lines_it_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    bounded = BoundedLog(interval=60.0, clock=lambda: now[0])
    logger = logging.getLogger("tests.connguard")
    caplog.set_level(logging.WARNING, logger="tests.connguard")
    assert bounded.emit(logger, logging.WARNING, "failed from %s", "a")
    for _ in range(5):
        now[0] += 1
        assert not bounded.emit(logger, logging.WARNING, "failed from %s", "b")
    now[0] += 60
    assert bounded.emit(logger, logging.WARNING, "failed from %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "failed from a",
        "failed from c (5 more since the last line not logged)",
    ]


def test_handshake_failures_are_counted_every_time_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[str] = []
    guard = ConnectionGuard(
        on_handshake_failure=counted.append,
        failure_log=BoundedLog(interval=60.0, clock=lambda: 0.0),
    )
    caplog.set_level(logging.WARNING, logger="lab.runtime.connections")
    for _ in range(100):
        guard.handshake_failed("10.0.0.9", "error", "certificate verify failed")
    assert counted == ["error"] * 100
    assert len(caplog.records) == 1
