"""lab.runtime.renewal.keep_renewed: the one renewal loop of agents, bastions and replicas,
driven on trio's autojump clock with a scripted renew()."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing

from lab.errors import Unavailable
from lab.runtime.renewal import keep_renewed
from tests.cli_identity.test_durations_and_renewal import Fixed

log = logging.getLogger("tests.renewal")


async def test_failures_back_off_and_a_success_waits_for_two_thirds_of_the_new_life(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    overdue = (datetime.now(UTC) - timedelta(days=2), datetime.now(UTC) - timedelta(days=1))
    fresh = (datetime.now(UTC), datetime.now(UTC) + timedelta(seconds=3000))
    current = [overdue]
    attempts: list[float] = []
    outcomes: list[Exception | None] = [Unavailable("labd is down"), Unavailable("still"), None]

    async def renew() -> None:
        attempts.append(trio.current_time())
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            raise outcome
        current[0] = fresh

    caplog.set_level(logging.WARNING, logger="tests.renewal")
    with trio.move_on_after(3000):
        await keep_renewed(
            lambda: current[0], renew, rng=Fixed(0.5), log=log, what="server/web1", min_interval=5
        )
    # Overdue: the first try after min_interval; then 30 s doubling, times 0.75 (Fixed 0.5).
    assert attempts[:3] == [pytest.approx(5), pytest.approx(50), pytest.approx(140)]
    # Renewed: the next one at 2/3 of the new 3000 s life (no jitter with Fixed 0.5).
    assert attempts[3] == pytest.approx(140 + 2000, abs=1)
    assert [r.getMessage() for r in caplog.records] == [
        "server/web1: certificate renewal failed: labd is down",
        "server/web1: certificate renewal failed: still",
    ]


async def test_an_error_that_is_not_a_lab_error_ends_the_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = datetime.now(UTC)

    async def renew() -> None:
        raise RuntimeError("a bug, not an outage")

    with trio.fail_after(100), pytest.raises(RuntimeError, match="a bug"):
        await keep_renewed(
            lambda: (now - timedelta(days=2), now - timedelta(days=1)),
            renew,
            rng=Fixed(0.5),
            log=log,
            what="replica r1",
        )
