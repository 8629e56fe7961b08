"""A labctl whose reader stops reading, and a client that goes silent without a FIN, next to
five untouched sessions (tests/faults/bystanders.py) on a real labd and lab-agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.faults import inject
from tests.faults.bystanders import bystanders
from tests.faults.site import Site, start_site

# labd pings quiet clients fast here so a silent one is caught within seconds.
PING_INTERVAL = 0.5
PING_TIMEOUT = 2.0
# The issue: 200 MB and a 30 s stall (bench/faults.py does that). The default suite writes
# ~21 MB and stalls 4 s: longer than the ping timeout, so labctl must keep answering pings
# while its stdout is blocked, and more than the windows labd and labctl may buffer.
SEQ_LAST = 3_000_000
STALL = 4.0
RSS_LIMIT_MB = 64


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(
        tmp_path_factory.mktemp("faults-slow"),
        LABD_CLIENT_PING_INTERVAL=str(PING_INTERVAL),
        LABD_CLIENT_PING_TIMEOUT=str(PING_TIMEOUT),
    )
    try:
        yield running
    finally:
        running.stop()


async def test_a_reader_that_stops_reading(site: Site) -> None:
    with trio.fail_after(180):
        async with bystanders(site, "slow") as crowd:
            growth = await inject.stalled_reader(site, SEQ_LAST, STALL)
            assert growth < RSS_LIMIT_MB, growth
            await crowd.checkpoint("a reader that stops reading")
            await crowd.finish()


async def test_a_client_that_vanishes_without_a_fin(site: Site) -> None:
    with trio.fail_after(120):
        async with bystanders(site, "silent") as crowd:
            await inject.silent_client(site, PING_TIMEOUT)
            await crowd.checkpoint("a client that vanishes without a FIN")
            await crowd.finish()
