"""Group commit: many producers, one transaction per batch, each producer awaits its own commit.

A single trio task owns a bounded memory channel. Producers ``await writer.submit(item)``; the
task takes whatever is queued (up to ``max_batch``), hands the batch to ``flush`` (one thread
hop, one transaction in the backend) and wakes each producer with its own outcome. A full
channel blocks producers: backpressure, never unbounded buffering.

``flush`` returns one outcome per item, in order: a result, or an exception for an item that
failed on its own (the backend rolled back just that item). If ``flush`` raises, the whole batch
failed and exactly its producers get the exception.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import trio
from attrs import define, frozen

from lab.errors import Unavailable

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]


class _Slot(Generic[R]):
    """Where the writer leaves one producer's outcome."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: R | None = None
        self.error: BaseException | None = None

    def resolve(self, outcome: R | Exception) -> None:
        if isinstance(outcome, Exception):
            self.error = outcome
        else:
            self.result = outcome
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


def _own_copy(exc: Exception) -> Exception:
    """A copy of ``exc`` for one producer: one exception object raised in many tasks would
    pile every task's frames onto the same traceback."""
    try:
        clone = copy.copy(exc)
    except Exception:  # an exception class that cannot be rebuilt from its args
        return exc
    clone.__cause__ = exc.__cause__
    clone.__context__ = exc.__context__
    clone.__traceback__ = exc.__traceback__
    return clone


@frozen(kw_only=True)
class WriterStatistics:
    batches: int
    items: int
    largest_batch: int
    queued: int
    in_flight: int
    """Items of the batch being flushed right now."""


@define
class _Counters:
    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    in_flight: int = 0


class GroupCommitWriter(Generic[T, R]):
    """Batches items from many producers into one ``flush`` call per batch.

    Start with ``await nursery.start(writer.run)``; stop gracefully with :meth:`close` (queued
    items are still flushed) or by cancelling the nursery (queued items fail ``Unavailable``).
    """

    def __init__(
        self, flush: Flush[T, R], *, max_batch: int = 1000, queue_size: int = 10_000
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[tuple[T, _Slot[R]]](queue_size)
        self._counters = _Counters()

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait until the batch holding it is committed; return its result.

        Raises what the backend raised for this item or its batch, and ``Unavailable`` when the
        writer is closed. On cancellation the item may still be committed (a database thread
        cannot be interrupted): callers must treat the outcome as unknown.
        """
        slot: _Slot[R] = _Slot()
        try:
            await self._send.send((item, slot))
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise Unavailable("the store is closed") from exc
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def close(self) -> None:
        """Refuse new items; :meth:`run` returns once every queued item is flushed."""
        self._send.close()

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            batches=self._counters.batches,
            items=self._counters.items,
            largest_batch=self._counters.largest_batch,
            queued=self._receive.statistics().current_buffer_used,
            in_flight=self._counters.in_flight,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush batches until :meth:`close` and the queue is drained, or until cancelled."""
        batch: list[tuple[T, _Slot[R]]] = []
        task_status.started()
        try:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        # EndOfChannel: closed and drained; flush this last batch first.
                        break
                await self._flush_batch(batch)
                batch = []
        finally:
            # Cancelled mid-way: nobody will flush what is left, so tell its producers now
            # rather than leave them waiting forever.
            error = Unavailable("the store closed before this write was committed")
            for _, slot in batch:
                if not slot.done.is_set():
                    slot.fail(error)
            while True:
                try:
                    _, slot = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                slot.fail(error)
            # Producers still blocked in send() now get BrokenResourceError -> Unavailable.
            self._receive.close()

    async def _flush_batch(self, batch: list[tuple[T, _Slot[R]]]) -> None:
        try:
            await self._flush_batch_inner(batch)
        finally:
            self._counters.in_flight = 0

    async def _flush_batch_inner(self, batch: list[tuple[T, _Slot[R]]]) -> None:
        items = [item for item, _ in batch]
        self._counters.in_flight = len(items)
        try:
            outcomes = await self._flush(items)
        except Exception as exc:
            for _, slot in batch:
                slot.fail(_own_copy(exc))
            return
        if len(outcomes) != len(batch):
            error = RuntimeError(f"flush returned {len(outcomes)} outcomes for {len(batch)} items")
            for _, slot in batch:
                slot.fail(error)
            return
        for (_, slot), outcome in zip(batch, outcomes, strict=True):
            slot.resolve(outcome)
        self._counters.batches += 1
        self._counters.items += len(batch)
        self._counters.largest_batch = max(self._counters.largest_batch, len(batch))


@asynccontextmanager
async def running(writer: GroupCommitWriter[T, R], *, drain_seconds: float) -> AsyncIterator[None]:
    """Run ``writer`` in a nursery of this context's own while the body runs.

    On exit the writer is closed and queued items get ``drain_seconds`` to be flushed; then it
    is cancelled and their producers get ``Unavailable``. The bound keeps an unreachable
    database or a wedged disk from hanging shutdown forever.
    """
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        try:
            yield
        finally:
            writer.close()
            nursery.cancel_scope.deadline = trio.current_time() + drain_seconds


__all__ = ["GroupCommitWriter", "WriterStatistics", "running"]
