"""One client's fault never touches another session: each case runs next to five untouched
sessions (tests/faults/bystanders.py) on one real labd and one real lab-agent, and asserts
their full output, exit codes, the agent's unchanged session and that no process is left."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.faults import inject
from tests.faults.bystanders import bystanders
from tests.faults.site import Site, start_site

# The issue asks for 50 runs in a row; the default suite runs fewer, in parallel batches
# (this 2-core box pays ~1 s of CPU per labctl); bench/faults.py runs 50.
HEAD_RUNS = 8
HEAD_BATCH = 4
# 200 in the issue and here, each exec on its own connection.
SHORT_EXECS = 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("faults"))
    try:
        yield running
    finally:
        running.stop()


async def test_closed_stdout_again_and_again(site: Site) -> None:
    """exec | head -1 (HEAD_RUNS times), get audit | head -1, get servers -o json | head -3,
    logs -f | head -1: quiet exits, no remote process, nobody else disturbed."""
    with trio.fail_after(180):
        async with bystanders(site, "head") as crowd:
            await inject.exec_into_head(site, HEAD_RUNS, HEAD_BATCH)
            await inject.other_commands_into_head(site)
            await crowd.checkpoint("| head")
            await crowd.finish()


async def test_interactive_execs_killed_or_unread(site: Site) -> None:
    """kill -9 of labctl exec -i and -t mid-command; stdin fed to a command that never
    reads it."""
    with trio.fail_after(120):
        async with bystanders(site, "interactive") as crowd:
            for flag in ("-i", "-t"):
                await inject.kill_9_midway(site, flag)
                await crowd.checkpoint(f"kill -9 of labctl exec {flag}")
            await inject.stdin_nobody_reads(site)
            await crowd.checkpoint("stdin nobody reads")
            await crowd.finish()


async def test_garbage_and_foreign_stream_ids(site: Site) -> None:
    with trio.fail_after(120):
        async with bystanders(site, "garbage") as crowd:
            await inject.garbage_and_foreign_ids(site)
            await crowd.checkpoint("garbage and foreign stream ids")
            await crowd.finish()


async def test_many_short_execs_at_once(site: Site) -> None:
    with trio.fail_after(180):
        async with bystanders(site, "short") as crowd:
            await inject.short_execs(site, SHORT_EXECS)
            await crowd.checkpoint(f"{SHORT_EXECS} concurrent short execs")
            await crowd.finish()
