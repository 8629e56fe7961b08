"""A witness (agent, joined bastion) keeps the newest audit checkpoint labd gave it and never
goes back to an older one; its loop fetches on a jittered interval and survives failures.
Files in tmp_path; the loop on trio's autojump clock with a seeded jitter."""

from __future__ import annotations

import json
import logging
import random
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from lab.errors import Unavailable
from lab.runtime.witness import WITNESS_FILE, keep, kept_seq, run_witness


def answer(seq: Any, **extra: Any) -> dict[str, Any]:
    return {"checkpoint": {"seq": seq, "head": "ab", **extra}, "public_key": "pk"}


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '{"checkpoint": []}', '{"checkpoint": {}}', '{"checkpoint": {"seq": "3"}}'],
)
def test_nothing_usable_kept(tmp_path: Path, text: str) -> None:
    (tmp_path / WITNESS_FILE).write_text(text)
    assert kept_seq(tmp_path) is None


def test_kept_seq(tmp_path: Path) -> None:
    assert kept_seq(tmp_path) is None
    (tmp_path / WITNESS_FILE).write_text(json.dumps(answer(7)))
    assert kept_seq(tmp_path) == 7


@pytest.mark.parametrize("bad", [None, [], {"checkpoint": 3}, answer("7"), answer(None)])
def test_an_answer_without_a_checkpoint_is_not_kept(tmp_path: Path, bad: Any) -> None:
    assert keep(tmp_path, bad) is False
    assert list(tmp_path.iterdir()) == []


def test_keeps_the_newest_and_never_goes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / WITNESS_FILE
    assert keep(tmp_path, answer(5)) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == json.dumps(answer(5), sort_keys=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [WITNESS_FILE]  # no temporary left
    assert keep(tmp_path, answer(5, head="cd")) is True  # as new: kept (labd re-signed)
    assert json.loads(path.read_text()) == answer(5, head="cd")
    assert keep(tmp_path, answer(9)) is True
    assert kept_seq(tmp_path) == 9
    assert caplog.records == []

    assert keep(tmp_path, answer(8)) is False
    assert kept_seq(tmp_path) == 9
    assert caplog.record_tuples == [
        (
            "lab.runtime.witness",
            logging.WARNING,
            "labd's audit checkpoint went back from #9 to #8: entries may have been cut off its "
            f"audit log; keeping #9 (labctl audit verify --checkpoint {path})",
        )
    ]
    assert keep(tmp_path, answer(0)) is False


# No fail_after in the loop tests: on the autojump clock a deadline is where the clock jumps to
# while keep() runs in its thread. Each test ends on an event its fake fetch sets.


async def test_the_loop_fetches_on_a_jittered_interval_and_survives_failures(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # what the loop will draw from the same seed: the first wait, then one per turn
    draws = random.Random(7)
    expected = [100 * draws.uniform(0.0, 1.0)]
    for _ in range(3):
        expected.append(expected[-1] + 100 * draws.uniform(0.9, 1.1))

    answers: list[Any] = [answer(3), Unavailable("labd is down"), answer(2), answer(4)]
    fetched_at: list[float] = []
    stored: list[int | None] = []
    both_stored = trio.Event()

    async def fetch() -> Any:
        fetched_at.append(trio.current_time())
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def on_stored() -> None:
        stored.append(kept_seq(tmp_path))
        if len(stored) == 2:
            both_stored.set()

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_witness(100, tmp_path, fetch, rng=random.Random(7), stored=on_stored)
        )
        await both_stored.wait()
        nursery.cancel_scope.cancel()
    assert [t - start for t in fetched_at] == pytest.approx(expected)
    assert stored == [3, 4]  # 2 went back: not stored
    warnings = [m for _, lvl, m in caplog.record_tuples if lvl == logging.WARNING]
    assert warnings[0] == "could not fetch labd's audit checkpoint: labd is down"
    assert warnings[1].startswith("labd's audit checkpoint went back from #3 to #2")
    assert len(warnings) == 2


async def test_the_loop_survives_a_directory_it_cannot_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    turns = 0
    fourth = trio.Event()

    async def fetch() -> Any:
        nonlocal turns
        turns += 1
        if turns == 4:
            fourth.set()
            await trio.sleep_forever()
        return answer(turns)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_witness(100, tmp_path / "gone", fetch, rng=random.Random(1)))
        await fourth.wait()
        nursery.cancel_scope.cancel()
    messages = [m for _, lvl, m in caplog.record_tuples if lvl == logging.WARNING]
    assert len(messages) == 3
    tmp = tmp_path / "gone" / "audit-checkpoint.tmp"
    assert set(messages) == {
        f"could not keep labd's audit checkpoint: [Errno 2] No such file or directory: '{tmp}'"
    }
