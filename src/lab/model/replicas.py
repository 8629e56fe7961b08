"""A labd replica as the cluster registry records it (cluster mode). No I/O."""

from __future__ import annotations

from datetime import datetime

from attrs import frozen


@frozen(kw_only=True)
class Replica:
    """One running labd process sharing the database with others.

    ``url`` is its internal address (``LABD_ADVERTISE_URL``), where other replicas forward
    streams for agents it holds. The row is a lease: alive while ``lease_until`` is ahead.
    """

    id: str
    url: str
    started_at: datetime
    seen: datetime
    lease_until: datetime

    def alive(self, at: datetime) -> bool:
        return self.lease_until > at
