"""Token buckets per key (client identity or source address). Pure: the caller passes time."""

from __future__ import annotations

from attrs import define, field

from lab.errors import RateLimited


@define
class _Bucket:
    tokens: float
    updated: float


@define
class RateLimiter:
    """``per_minute`` requests per key, bursting up to ``per_minute``."""

    per_minute: float
    name: str = "requests"
    max_keys: int = 100_000
    _buckets: dict[str, _Bucket] = field(factory=dict)

    def __len__(self) -> int:
        """The keys held now: at most ``max_keys``."""
        return len(self._buckets)

    def check(self, key: str, now: float) -> None:
        """Take one token for ``key`` or raise RateLimited with the seconds to wait."""
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(tokens=self.per_minute, updated=now)
        bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            raise RateLimited(f"too many {self.name}; retry in {wait:.0f}s", retry_after=wait)
        bucket.tokens -= 1.0

    def _evict(self, now: float) -> None:
        # Full buckets carry no state worth keeping; drop them first.
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.per_minute / 60 >= self.per_minute
        ]
        for k in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[k]


@define
class Limits:
    """The request limits of one labd: ``general`` on every route but the health probes,
    ``tokens`` on top of it on the join-token routes. Keys name the client: ``cert/SERIAL`` for
    an authenticated caller, else ``addr/ADDRESS``."""

    general: RateLimiter
    tokens: RateLimiter

    @classmethod
    def per_minute(cls, general: float, tokens: float) -> Limits:
        return cls(
            general=RateLimiter(general, name="requests"),
            tokens=RateLimiter(tokens, name="token requests"),
        )
