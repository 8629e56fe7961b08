"""The mirror cases: the agent or labd itself dies (kill -9). Every labctl exits 5 with one
line within 15 s; after labd's death the agent kills what it ran, reconnects to the new labd
and leaves no process behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.faults.bystanders import TAG, Bystanders, Session, bystanders
from tests.faults.site import Site, assert_no_orphans, await_for, start_site

ENDED_WITHIN = 15.0


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("faults-mirror"))
    try:
        yield running
    finally:
        running.stop()


async def assert_all_end_with_one_line(crowd: Bystanders) -> None:
    sessions: list[Session] = crowd.execs + crowd.followers
    with trio.fail_after(ENDED_WITHIN):
        for s in sessions:
            code = await trio.to_thread.run_sync(s.proc.wait)
            err = s.err.text()
            assert code == 5, (s.name, code, err)
            # One error line, and a hint line when there is something to try.
            lines = err.splitlines()
            assert len(lines) <= 2 and err.startswith("error: "), (s.name, err)
            assert all(line.startswith("hint: ") for line in lines[1:]), (s.name, err)


async def test_kill_9_of_the_agent(site: Site) -> None:
    with trio.fail_after(120):
        async with bystanders(site, "agent-killed") as crowd:
            site.agent.kill9()
            await assert_all_end_with_one_line(crowd)
        for s in crowd.execs + crowd.followers:
            assert "agent disconnected" in s.err.text(), s.name
        # Nobody is left to kill what a SIGKILLed agent ran: the counters end by themselves
        # (their stop file); docs/protocol.md says so.


async def test_kill_9_of_labd(site: Site) -> None:
    with trio.fail_after(120):
        async with bystanders(site, "labd-killed") as crowd:
            site.labd.kill9()
            await assert_all_end_with_one_line(crowd)
            # The agent lost its connection and killed everything it ran.
            await assert_no_orphans(TAG)
        site.start_labd("labd2")
        await await_for("the agent to reconnect", lambda: len(site.agent_sessions()) == 2, 60)
        assert site.agent.proc.poll() is None
        first, second = site.agent_sessions()
        assert first != second and second in site.labd_sessions()
