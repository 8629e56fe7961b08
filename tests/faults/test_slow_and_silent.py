"""A labctl whose reader stops reading, and a client that goes silent without a FIN, next to
five untouched sessions (tests/faults/bystanders.py) on a real labd and lab-agent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.cli.wsclient import connect
from lab.proto import decode, encode
from lab.proto.messages import ExecStarted, Request, Response
from tests.e2e.daemons import proc_rss_mb, reset_peak_rss
from tests.faults.bystanders import bystanders
from tests.faults.site import (
    AGENT,
    TAG_VAR,
    Site,
    assert_no_orphans,
    labctl,
    start_site,
    tagged_pids,
)
from tests.hub.hubtools import wait_process_gone

# labd pings quiet clients fast here so a silent one is caught within seconds.
PING_INTERVAL = 0.5
PING_TIMEOUT = 2.0
# The issue: 200 MB and a 30 s stall (bench/faults.py does that). The default suite writes
# ~21 MB and stalls 5 s: longer than the ping timeout, so labctl must keep answering pings
# while its stdout is blocked, and far more than the windows labd may buffer.
SEQ_LAST = 3_000_000
STALL = 5.0
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
    expected = "".join(f"{i}\n" for i in range(1, SEQ_LAST + 1)).encode()
    argv = labctl(
        "exec", "-e", f"{TAG_VAR}=slow", f"server/{AGENT}", "--", "seq", "1", str(SEQ_LAST)
    )
    labd = site.labd.proc.pid
    with trio.fail_after(180):
        async with bystanders(site, "slow") as crowd:
            base_rss, _ = proc_rss_mb(labd)
            assert reset_peak_rss(labd)
            proc = await trio.lowlevel.open_process(argv, env=site.env(), stdout=subprocess.PIPE)
            try:
                assert proc.stdout is not None
                first = await proc.stdout.receive_some(1)  # started, then nobody reads
                await trio.sleep(STALL)  # the fault itself: a stall of this length
                _, peak_rss = proc_rss_mb(labd)
                # The remote writer was slowed down, not finished or killed.
                assert tagged_pids("slow"), "the remote command is gone"
                assert proc.returncode is None
                rest = bytearray(first)
                while chunk := await proc.stdout.receive_some(1 << 16):
                    rest += chunk
                assert await proc.wait() == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()
            assert bytes(rest) == expected  # nothing lost, nothing reordered
            assert peak_rss - base_rss < RSS_LIMIT_MB, (base_rss, peak_rss)
            await crowd.checkpoint("a reader that stops reading")
            await assert_no_orphans("slow")
            await crowd.finish()


def exec_ends(data_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(data_dir / "labd.db")
    try:
        rows = db.execute(
            "SELECT result, details FROM audit WHERE action = 'exec:run' ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    entries = [{"result": r, "details": json.loads(d)} for r, d in rows]
    return [e for e in entries if e["details"].get("phase") == "end"]


async def test_a_client_that_vanishes_without_a_fin(site: Site) -> None:
    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    with trio.fail_after(120):
        async with bystanders(site, "silent") as crowd:
            with trio.CancelScope() as vanish:
                async with connect(site.url, "/ws/exec", context) as ws:
                    start = {"argv": ["sleep", "60"], "env": {TAG_VAR: "silent"}}
                    request = Request(
                        request_id="1", method="exec", params={"targets": [AGENT], "start": start}
                    )
                    await ws.send_message(encode(request))
                    assert isinstance(decode(await ws.get_message()), Response)
                    started = decode(await ws.get_message())
                    assert isinstance(started, ExecStarted)
                    pid = started.pid
                    # Socket open, nothing read, nothing sent: labd ends the stream after
                    # its ping timeout.
                    with trio.fail_after(PING_TIMEOUT + 10):
                        await wait_process_gone(pid)
                    vanish.cancel()  # leave without a close handshake
            ends = [e for e in exec_ends(site.data_dir) if e["details"].get("pid") == pid]
            assert len(ends) == 1 and ends[0]["result"] == "error"
            assert ends[0]["details"]["reason"] == "ping timeout"
            await crowd.checkpoint("a client that vanishes without a FIN")
            await assert_no_orphans("silent")
            await crowd.finish()
