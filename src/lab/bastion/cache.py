"""Bounded caches that keep ``/dispatch`` off the database and out of jinja2.

A PXE boot storm asks ``/dispatch`` the same few questions many times over. Reading the store
costs a thread hop behind the connection's ``CapacityLimiter(1)`` (so every read queues behind
every write), and rendering costs a jinja2 call; both are answered from memory here.

Both caches are bounded LRUs: ``/dispatch`` is unauthenticated, so a client inventing MACs must
not grow memory without limit. Evicting an entry is always safe; the next lookup misses.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Final, Generic, TypeVar

from lab.model import Machine

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Miss(enum.Enum):
    """What a lookup returns when the cache does not know (``None`` is a value: no machine)."""

    MISS = enum.auto()


MISS: Final = Miss.MISS


class BoundedLRU(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | Miss:
        try:
            value = self._items[key]
        except KeyError:
            return MISS
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class MachineCache:
    """The machine rows (or their absence) as the store last returned them.

    Valid because a bastion process is the only writer of its machines table: the same
    assumption its in-process lock (read-modify-write) and change version (long-poll) make.
    Every write goes through :meth:`writing`, which drops the entry first and stores the
    row the store returned once the write committed; a write whose outcome is unknown
    (an error, a cancellation) leaves the entry dropped, so the next lookup reads the store.

    A read that overlapped a write may have seen the row before or after it, so its result is
    only kept when no write ran at any time during the read (:meth:`ticket` / :meth:`fill`).
    """

    def __init__(self, capacity: int = 8192) -> None:
        self._rows: BoundedLRU[str, Machine | None] = BoundedLRU(capacity)
        self._epoch = 0
        self._writing = 0
        # hostname -> MACs holding it, for every machine; None until loaded from a full list,
        # and again after a write whose outcome is unknown.
        self._names: dict[str, set[str]] | None = None

    def get(self, mac: str) -> Machine | Miss | None:
        return self._rows.get(mac)

    def ticket(self) -> int | None:
        """Take before reading the store; ``None`` when a write is in flight (do not fill)."""
        return None if self._writing else self._epoch

    def fill(self, mac: str, row: Machine | None, ticket: int | None) -> None:
        """Keep what a read returned, unless a write started or ended since ``ticket``."""
        if ticket is not None and ticket == self._epoch and not self._writing:
            self._rows.put(mac, row)

    def hostname_owners(self, hostname: str) -> set[str] | None:
        """The MACs of the machines named ``hostname``; ``None`` when the index is not loaded."""
        if self._names is None:
            return None
        return set(self._names.get(hostname, ()))

    def load_names(self, machines: list[Machine], ticket: int | None) -> None:
        """Build the hostname index from a full list read after taking ``ticket``."""
        if ticket is None or ticket != self._epoch or self._writing:
            return
        names: dict[str, set[str]] = {}
        for m in machines:
            if m.hostname:
                names.setdefault(m.hostname, set()).add(m.mac)
        self._names = names

    @contextmanager
    def writing(self, mac: str) -> Iterator[None]:
        """Bracket one write of ``mac``; call :meth:`committed` inside once it is durable."""
        self._epoch += 1
        self._writing += 1
        self._rows.pop(mac)
        epoch = self._epoch
        try:
            yield
        finally:
            self._writing -= 1
            if self._epoch == epoch:  # committed() was not called: the outcome is unknown
                self._names = None
            self._epoch += 1

    def committed(self, mac: str, row: Machine | None) -> None:
        """The row the store holds for ``mac`` after a write (``None``: deleted)."""
        self._epoch += 1
        self._rows.put(mac, row)
        if self._names is not None:
            for owners in self._names.values():
                owners.discard(mac)
            if row is not None and row.hostname:
                self._names.setdefault(row.hostname, set()).add(mac)

    def __len__(self) -> int:
        return len(self._rows)


__all__ = ["MISS", "BoundedLRU", "MachineCache", "Miss"]
