"""Pure helpers: duration parsing and the agent's renewal schedule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from lab.agent.identity import renewal_delay
from lab.client.durations import format_duration, parse_duration
from lab.errors import Invalid


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        (" 1H ", 3600),
        ("90s", 90),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1y", "-1h", "0s", "1.5h", "1 h", "h", "1h-", "abc"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_duration(text, field="ttl")
    assert info.value.details["fields"] == ["ttl"]
    assert "ttl" in info.value.message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (3600, "1h"),
        (3661, "1h1m"),
        (3 * 86400 + 4 * 3600 + 5, "3d4h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


T0 = datetime(2026, 11, 1, tzinfo=UTC)
LIFE = timedelta(days=30)


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


def test_renewal_at_two_thirds_without_jitter() -> None:
    delay = renewal_delay(T0, T0 + LIFE, Fixed(0.5), now=T0)
    assert delay == pytest.approx(LIFE.total_seconds() * 2 / 3)


def test_renewal_counts_from_now() -> None:
    now = T0 + timedelta(days=5)
    delay = renewal_delay(T0, T0 + LIFE, Fixed(0.5), now=now)
    assert delay == pytest.approx((timedelta(days=20) - timedelta(days=5)).total_seconds())


def test_renewal_jitter_is_ten_percent_both_ways() -> None:
    base = LIFE.total_seconds() * 2 / 3
    assert renewal_delay(T0, T0 + LIFE, Fixed(0.0), now=T0) == pytest.approx(base * 0.9)
    assert renewal_delay(T0, T0 + LIFE, Fixed(1.0), now=T0) == pytest.approx(base * 1.1)
    rng = random.Random(42)
    delays = [renewal_delay(T0, T0 + LIFE, rng, now=T0) for _ in range(500)]
    assert min(delays) >= base * 0.9 and max(delays) <= base * 1.1
    assert len(set(delays)) > 400, "jitter spreads agents enrolled together"
    # Even the latest renewal comes well before expiry.
    assert max(delays) < LIFE.total_seconds()


def test_overdue_renews_now() -> None:
    assert renewal_delay(T0, T0 + LIFE, Fixed(1.0), now=T0 + timedelta(days=25)) == 0.0
    assert renewal_delay(T0, T0 + LIFE, Fixed(1.0), now=T0 + timedelta(days=40)) == 0.0


def test_renewal_defaults_to_the_current_time() -> None:
    now = datetime.now(UTC)
    delay = renewal_delay(now, now + LIFE, Fixed(0.5))
    assert delay == pytest.approx(LIFE.total_seconds() * 2 / 3, abs=5)
