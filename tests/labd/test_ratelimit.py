"""RateLimiter on its own, with the time passed in: rate, burst, boundaries and the key bound."""

from __future__ import annotations

import pytest

from lab.errors import RateLimited
from lab.labd.access.ratelimit import Limits, RateLimiter


def refused(limiter: RateLimiter, key: str, now: float) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        limiter.check(key, now)
    return info.value


def test_a_burst_of_per_minute_then_one_per_interval() -> None:
    limiter = RateLimiter(3)  # one token every 20 s
    for _ in range(3):
        limiter.check("a", 0.0)
    error = refused(limiter, "a", 0.0)
    assert error.retry_after == pytest.approx(20.0)
    assert str(error) == "too many requests; retry in 20s"
    assert error.details == {"retry_after": error.retry_after}
    # half a token after 10 s: still refused, 10 s to go; the refusal spent nothing
    assert refused(limiter, "a", 10.0).retry_after == pytest.approx(10.0)
    assert refused(limiter, "a", 15.0).retry_after == pytest.approx(5.0)
    # exactly one token at 20 s is enough, and is spent
    limiter.check("a", 20.0)
    assert refused(limiter, "a", 20.0).retry_after == pytest.approx(20.0)


def test_refill_is_capped_at_per_minute() -> None:
    limiter = RateLimiter(2)
    limiter.check("a", 0.0)
    for _ in range(2):
        limiter.check("a", 3600.0)
    assert refused(limiter, "a", 3600.0).retry_after == pytest.approx(30.0)


def test_refill_rate_is_per_minute_over_sixty_seconds() -> None:
    limiter = RateLimiter(60)  # one token a second
    for _ in range(60):
        limiter.check("a", 100.0)
    assert refused(limiter, "a", 100.0).retry_after == pytest.approx(1.0)
    assert refused(limiter, "a", 100.5).retry_after == pytest.approx(0.5)
    for _ in range(3):
        limiter.check("a", 103.0)
    refused(limiter, "a", 103.0)


def test_keys_are_independent_and_the_name_is_in_the_message() -> None:
    limiter = RateLimiter(1, name="token requests")
    limiter.check("cert/1", 0.0)
    assert str(refused(limiter, "cert/1", 0.0)) == "too many token requests; retry in 60s"
    limiter.check("cert/2", 0.0)
    limiter.check("addr/1", 0.0)


@pytest.mark.parametrize("per_minute", [0, -1])
def test_zero_or_less_is_unlimited(per_minute: float) -> None:
    limiter = RateLimiter(per_minute)
    for _ in range(1000):
        limiter.check("a", 0.0)
    assert len(limiter) == 0


def test_keys_are_bounded_by_max_keys() -> None:
    limiter = RateLimiter(1, max_keys=4)
    for i in range(4):
        limiter.check(f"k{i}", 0.0)
    assert len(limiter) == 4
    for i in range(4, 100):
        limiter.check(f"k{i}", 0.0)
        assert len(limiter) <= 4


def test_eviction_drops_the_full_buckets_first() -> None:
    limiter = RateLimiter(2, max_keys=2)  # one token every 30 s
    limiter.check("a", 1000.0)
    limiter.check("a", 1000.0)  # a: empty
    limiter.check("b", 1000.0)  # b: one token left
    # 30 s later a holds one token and b is exactly full again: b goes, a stays
    limiter.check("c", 1030.0)
    assert len(limiter) == 2
    limiter.check("a", 1030.0)
    refused(limiter, "a", 1030.0)


def test_eviction_without_full_buckets_drops_the_older_half() -> None:
    limiter = RateLimiter(1, max_keys=4)
    for key in ("k0", "k1", "k2", "k3"):
        limiter.check(key, 0.0)  # all empty
    limiter.check("k4", 1.0)
    assert len(limiter) == 3  # k2, k3, k4
    refused(limiter, "k2", 1.0)
    refused(limiter, "k3", 1.0)
    limiter.check("k0", 1.0)  # forgotten, so a fresh bucket
    assert len(limiter) == 4


def test_limits_per_minute() -> None:
    limits = Limits.per_minute(120, 5)
    assert (limits.general.per_minute, limits.general.name) == (120, "requests")
    assert (limits.tokens.per_minute, limits.tokens.name) == (5, "token requests")
