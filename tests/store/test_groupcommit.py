"""The group-commit writer against a scripted flush (the seam is the flush callable)."""

from __future__ import annotations

import pytest
import trio

from lab.errors import Unavailable
from lab.store.groupcommit import GroupCommitWriter


class ScriptedFlush:
    """Records batches; can be held so items pile up; fails batches holding ``"boom"``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = trio.Event()
        self.release = trio.Event()
        self.hold = False

    async def __call__(self, items: list[str]) -> list[str | Exception]:
        self.batches.append(list(items))
        self.entered.set()
        if self.hold:
            await self.release.wait()
        if "boom" in items:
            raise RuntimeError("batch failed")
        return [ValueError(i) if i.startswith("bad") else i.upper() for i in items]


async def wait_queued(writer: GroupCommitWriter[str, str], n: int) -> None:
    while writer.statistics().queued < n:
        await trio.sleep(0)  # a checkpoint, not a timed wait


async def test_items_queued_during_a_flush_share_the_next_batch() -> None:
    flush = ScriptedFlush()
    flush.hold = True
    writer: GroupCommitWriter[str, str] = GroupCommitWriter(flush, max_batch=100)
    results: dict[str, str] = {}

    async def submit(item: str) -> None:
        results[item] = await writer.submit(item)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            nursery.start_soon(submit, "a")
            await flush.entered.wait()
            for item in "bcdef":
                nursery.start_soon(submit, item)
            await wait_queued(writer, 5)
            flush.release.set()
            while len(results) < 6:
                await trio.sleep(0)
            writer.close()
    # trio does not promise the order in which start_soon tasks run, only the batching.
    assert flush.batches[0] == ["a"]
    assert sorted(flush.batches[1]) == ["b", "c", "d", "e", "f"]
    assert len(flush.batches) == 2
    assert results == {i: i.upper() for i in "abcdef"}
    stats = writer.statistics()
    assert (stats.batches, stats.items, stats.largest_batch) == (2, 6, 5)


async def test_max_batch_is_respected() -> None:
    flush = ScriptedFlush()
    flush.hold = True
    writer: GroupCommitWriter[str, str] = GroupCommitWriter(flush, max_batch=2)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            nursery.start_soon(writer.submit, "a")
            await flush.entered.wait()
            for item in "bcde":
                nursery.start_soon(writer.submit, item)
            await wait_queued(writer, 4)
            flush.release.set()
            writer.close()
    assert [len(b) for b in flush.batches] == [1, 2, 2]
    assert sorted(i for b in flush.batches for i in b) == ["a", "b", "c", "d", "e"]


async def test_batch_error_reaches_exactly_its_producers() -> None:
    flush = ScriptedFlush()
    flush.hold = True
    writer: GroupCommitWriter[str, str] = GroupCommitWriter(flush)
    outcome: dict[str, object] = {}

    async def submit(item: str) -> None:
        try:
            outcome[item] = await writer.submit(item)
        except Exception as exc:
            outcome[item] = exc

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            nursery.start_soon(submit, "first")
            await flush.entered.wait()
            nursery.start_soon(submit, "boom")
            nursery.start_soon(submit, "x")
            await wait_queued(writer, 2)
            flush.release.set()
            while len(outcome) < 3:
                await trio.sleep(0)
            await submit("after")
            writer.close()
    assert flush.batches[0] == ["first"] and flush.batches[2] == ["after"]
    assert sorted(flush.batches[1]) == ["boom", "x"]
    assert outcome["first"] == "FIRST" and outcome["after"] == "AFTER"
    assert isinstance(outcome["boom"], RuntimeError)
    assert isinstance(outcome["x"], RuntimeError) and str(outcome["x"]) == "batch failed"
    assert outcome["x"] is not outcome["boom"]  # each producer raises its own object


async def test_item_error_reaches_only_that_producer() -> None:
    flush = ScriptedFlush()
    writer: GroupCommitWriter[str, str] = GroupCommitWriter(flush)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with pytest.raises(ValueError, match="bad1"):
            await writer.submit("bad1")
        assert await writer.submit("ok") == "OK"
        writer.close()


async def test_close_flushes_what_is_queued_then_refuses() -> None:
    flush = ScriptedFlush()
    flush.hold = True
    writer: GroupCommitWriter[str, str] = GroupCommitWriter(flush)
    results: list[str] = []

    async def submit(item: str) -> None:
        results.append(await writer.submit(item))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            nursery.start_soon(submit, "a")
            await flush.entered.wait()
            nursery.start_soon(submit, "b")
            await wait_queued(writer, 1)
            writer.close()
            flush.release.set()
    assert sorted(results) == ["A", "B"]
    with pytest.raises(Unavailable):
        await writer.submit("late")


async def test_cancelled_writer_fails_waiting_producers() -> None:
    flush = ScriptedFlush()
    flush.hold = True
    writer: GroupCommitWriter[str, str] = GroupCommitWriter(flush)
    outcome: dict[str, object] = {}

    async def submit(item: str) -> None:
        try:
            outcome[item] = await writer.submit(item)
        except Unavailable as exc:
            outcome[item] = exc

    with trio.fail_after(5):
        async with trio.open_nursery() as producers, trio.open_nursery() as owner:
            await owner.start(writer.run)
            producers.start_soon(submit, "in-flight")
            await flush.entered.wait()
            producers.start_soon(submit, "queued")
            await wait_queued(writer, 1)
            owner.cancel_scope.cancel()
    assert isinstance(outcome["in-flight"], Unavailable)
    assert isinstance(outcome["queued"], Unavailable)
