"""The last log records of this process, in memory, and live followers of new ones.

:class:`LogBuffer` is a ``logging.Handler``: attached to the root logger it keeps the last
``capacity`` records (as plain dicts) in a ring, and hands each new one to every follower.
A follower reads from a bounded channel; when it falls ``follower_queue`` records behind,
records are dropped for it (and counted, so its reader can say so) instead of queued, so a
slow reader never grows the daemon's memory.

Records may come from worker threads (``trio.to_thread``); they reach followers through the
trio token of the run that created the buffer.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import trio

from lab.runtime.logs import RequestIdFilter

Entry = dict[str, Any]


def entry_of(record: logging.LogRecord, message: str) -> Entry:
    out: Entry = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": message,
    }
    rid = getattr(record, "request_id", None)
    if rid is not None:
        out["request_id"] = rid
    return out


def format_entry(entry: Entry) -> str:
    """One line of text for an entry, as ``labctl logs bastion`` prints it."""
    rid = entry.get("request_id")
    tag = f"[rid={rid}] " if rid else ""
    level = str(entry.get("level", "")).upper()
    return f"{entry.get('time', '')} {level} {entry.get('logger', '')}: {tag}{entry.get('message')}"


class Follower:
    """One reader of new entries; iterate it. ``dropped`` counts what it missed."""

    def __init__(self, size: int) -> None:
        self._send, self._recv = trio.open_memory_channel[Entry](size)
        self.dropped = 0

    def offer(self, entry: Entry) -> None:
        try:
            self._send.send_nowait(entry)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def close(self) -> None:
        self._send.close()

    async def __aiter__(self) -> AsyncIterator[Entry]:
        async for entry in self._recv:
            if self.dropped:
                missed, self.dropped = self.dropped, 0
                yield {
                    "time": entry["time"],
                    "level": "warning",
                    "logger": "lab.logs",
                    "message": f"{missed} log records dropped: this reader was too slow",
                }
            yield entry


class LogBuffer(logging.Handler):
    """A ring of the last ``capacity`` records plus live followers. Create inside trio.run."""

    def __init__(self, capacity: int = 1000, *, follower_queue: int = 256) -> None:
        super().__init__(logging.NOTSET)
        self.addFilter(RequestIdFilter())
        self._ring: deque[Entry] = deque(maxlen=capacity)
        self._ring_lock = threading.Lock()
        self._followers: set[Follower] = set()
        self._follower_queue = follower_queue
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = entry_of(record, record.getMessage())
        except Exception:
            self.handleError(record)
            return
        with self._ring_lock:
            self._ring.append(entry)
        if not self._followers:
            return
        if threading.get_ident() == self._thread:
            self._deliver(entry)
        else:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._deliver, entry)

    def _deliver(self, entry: Entry) -> None:
        for follower in list(self._followers):
            follower.offer(entry)

    def tail(self, lines: int | None = None) -> list[Entry]:
        """The last ``lines`` entries (all kept ones when None), oldest first."""
        # emit() may append from a worker thread meanwhile.
        with self._ring_lock:
            entries = list(self._ring)
        return entries if lines is None else entries[max(0, len(entries) - lines) :]

    @contextmanager
    def follow(self, lines: int | None = None) -> Iterator[tuple[list[Entry], Follower]]:
        """The last ``lines`` entries and a follower of every later one, with no gap between.

        Both are taken in one step of the trio thread; leaving the block unsubscribes.
        """
        follower = Follower(self._follower_queue)
        if self._closed:
            follower.close()
        else:
            self._followers.add(follower)
        try:
            yield self.tail(lines), follower
        finally:
            self._followers.discard(follower)
            follower.close()

    def statistics(self) -> dict[str, int]:
        return {"kept": len(self._ring), "followers": len(self._followers)}

    def close(self) -> None:
        """End every follow (the daemon is stopping); the ring stays readable."""
        self._closed = True
        for follower in list(self._followers):
            follower.close()
        self._followers.clear()
        super().close()


@contextmanager
def attached(buffer: LogBuffer, logger: logging.Logger | None = None) -> Iterator[LogBuffer]:
    """Attach ``buffer`` to ``logger`` (the root logger) for the ``with`` block, then close it."""
    target = logger or logging.getLogger()
    target.addHandler(buffer)
    try:
        yield buffer
    finally:
        target.removeHandler(buffer)
        buffer.close()


__all__ = ["Entry", "Follower", "LogBuffer", "attached", "entry_of", "format_entry"]
