"""A user's roles as last read, for the per-request checks of the Kubernetes proxy.

Reading them costs three store queries (the user, its role names, each role) on every request;
at hundreds of requests a second that was the proxy's largest cost after the upstream client.

How long a stale answer can live:

- a change made through this labd (``users`` and ``roles`` routes, ``labctl apply`` of User or
  Role documents) empties the cache before the change is answered: the next request reads it;
- a change made through another replica reaches this one with the cluster change counter, read
  every ``lab.labd.cluster.POLL_INTERVAL`` (1 s): within that poll;
- anything else (a database edited by hand) within ``role_cache_ttl`` seconds
  (``LABD_ROLE_CACHE_TTL``, default :data:`ROLE_CACHE_TTL`; 0 reads at every request).

A read that started before an emptying is not kept (generation check), so a slow read cannot put
the old roles back. Refusals (an unknown or disabled user) are never kept. Revocation does not
go through here: it is checked at every request against ``Revocations``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from attrs import define, field

from lab.model import Role

ROLE_CACHE_TTL = 5.0
"""Seconds a user's roles are reused before they are read from the store again."""
ROLE_CACHE_SIZE = 4096
"""Users remembered at most (the oldest read is forgotten first)."""

Loader = Callable[[str], Awaitable[tuple[Role, ...]]]


@define
class RoleCache:
    """``await roles(name)``: ``load(name)`` as of at most ``ttl`` seconds ago, or since the
    last :meth:`forget`; errors of ``load`` pass through and are not kept."""

    load: Loader
    ttl: float = ROLE_CACHE_TTL
    size: int = ROLE_CACHE_SIZE
    clock: Callable[[], float] = time.monotonic
    _kept: dict[str, tuple[float, tuple[Role, ...]]] = field(factory=dict)
    _generation: int = 0

    async def roles(self, name: str) -> tuple[Role, ...]:
        hit = self._kept.get(name)
        now = self.clock()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        generation = self._generation
        roles = await self.load(name)
        if generation == self._generation:
            self._kept.pop(name, None)
            self._kept[name] = (now, roles)
            while len(self._kept) > self.size:
                del self._kept[next(iter(self._kept))]
        return roles

    def forget(self) -> None:
        """Users or roles changed: read every user's roles again (reads under way are not
        kept)."""
        self._generation += 1
        self._kept.clear()
