"""The faults themselves, one function each, shared by tests/faults and bench/faults.py.

Each injects one client fault against a :class:`tests.faults.site.Site` and asserts what the
faulty client itself must see; what the fault must *not* do to others is checked by the
caller (bystanders, agent session, orphans). Remote commands carry ``LAB_FAULT=<tag>``.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from lab.client.wsclient import StreamSession, StreamState, connect
from lab.proto import Channel, CloseCode, decode, encode, encode_data
from lab.proto.messages import Credit, ExecStarted, Request, Response, StreamCancel
from tests.e2e.daemons import proc_rss_mb
from tests.faults.site import (
    AGENT,
    TAG_VAR,
    Site,
    assert_no_orphans,
    await_for,
    labctl,
    probe,
    tagged_pids,
)
from tests.hub.hubtools import wait_process_gone

TARGET = f"server/{AGENT}"


def pipeline(argv: list[str], env: Mapping[str, str], lines: int = 1) -> tuple[int, bytes, bytes]:
    """``argv | head -n LINES``: (argv's exit code, argv's stderr, what head printed)."""
    with tempfile.TemporaryFile() as err:
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=dict(env))
        assert first.stdout is not None
        head = subprocess.Popen(
            ["head", "-n", str(lines)], stdin=first.stdout, stdout=subprocess.PIPE
        )
        first.stdout.close()
        out, _ = head.communicate(timeout=60)
        code = first.wait(timeout=60)
        err.seek(0)
        return code, err.read(), out


async def exec_into_head(site: Site, runs: int, batch: int) -> None:
    """``labctl exec … seq 1 2000000 | head -1``, ``runs`` times, ``batch`` at once: each
    prints ``1``, exits 141 without a word and leaves no remote process."""
    argv = labctl("exec", "-e", f"{TAG_VAR}=head", TARGET, "--", "seq", "1", "2000000")
    results: list[tuple[int, bytes, bytes]] = []

    async def one() -> None:
        results.append(await trio.to_thread.run_sync(pipeline, argv, site.env()))

    done = 0
    while done < runs:
        async with trio.open_nursery() as nursery:
            for _ in range(min(batch, runs - done)):
                nursery.start_soon(one)
        done += batch
    assert results == [(141, b"", b"1\n")] * runs, results
    await assert_no_orphans("head")


async def other_commands_into_head(site: Site) -> None:
    """``get audit | head -1``, ``get servers -o json | head -3``, ``logs -f | head -1``."""
    for args, lines in (
        (["get", "audit"], 1),
        (["get", "servers", "-o", "json"], 3),
        (["logs", TARGET, "--source", "feed", "-f"], 1),
    ):
        code, err, out = await trio.to_thread.run_sync(
            partial(pipeline, labctl(*args), site.env(), lines)
        )
        # Output that fits the pipe is written before head leaves: then exit 0.
        assert err == b"" and code in (0, 141), (args, code, err)
        assert len(out.splitlines()) == lines, args
        if "-f" in args:
            assert code == 141  # a follower always writes again


async def kill_9_midway(site: Site, flag: str) -> None:
    """``labctl exec FLAG`` killed with SIGKILL while its command runs: the command is gone."""
    tag = f"kill{flag}"
    script = "echo $$; exec sleep 60"
    argv = labctl("exec", flag, "-e", f"{TAG_VAR}={tag}", TARGET, "--", "sh", "-c", script)
    disconnects = site.disconnects()
    proc = await trio.lowlevel.open_process(
        argv, env=site.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive_some(64)
        pid = int(line.strip())
        proc.kill()
        await proc.wait()
        with trio.fail_after(15):
            await wait_process_gone(pid)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
        if proc.stdin is not None:
            await proc.stdin.aclose()
    await assert_no_orphans(tag)
    # labd said so in an INFO line (other clients closing right after their exit may add some).
    await await_for("labd's disconnect line", lambda: site.disconnects() > disconnects)


async def stdin_nobody_reads(site: Site) -> None:
    """``exec -i`` of a command that never reads its stdin, fed 200 small frames: only that
    stream stalls (the agent's reader does not wait for it); cancelling it kills it."""
    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    async with connect(site.url, "/ws/exec", context) as ws:
        session = StreamSession(ws)
        start = {"argv": ["sleep", "60"], "stdin": True, "env": {TAG_VAR: "stdin"}}
        (state,) = await session.open("exec", {"targets": [AGENT], "start": start})
        while state.pid is None:
            assert await session.step(_ignore)
        async with trio.open_nursery() as nursery:
            # Take the agent's stdin credit as it comes, meanwhile.
            nursery.start_soon(session.run, _ignore)
            for _ in range(200):  # more than the pipe and any fixed queue hold, within credit
                await session.send_stdin(state, b"x" * 1024)
            await probe(site)
            await session.send(StreamCancel(stream_id=state.stream_id))
            with trio.fail_after(15):
                await wait_process_gone(state.pid)
            nursery.cancel_scope.cancel()
    await assert_no_orphans("stdin")


async def _ignore(_: StreamState, channel: Channel, data: bytes) -> None:
    pass


async def open_sleeper(ws: WebSocketConnection, tag: str) -> StreamSession:
    """A ``sleep 60`` on the agent through ``ws``, running once this returns."""
    session = StreamSession(ws)
    start = {"argv": ["sleep", "60"], "env": {TAG_VAR: tag}}
    (state,) = await session.open("exec", {"targets": [AGENT], "start": start})
    while state.pid is None:
        assert await session.step(_ignore)
    return session


async def closed_code(ws: WebSocketConnection) -> int:
    """Read until labd closes the connection; its close code."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as exc:
        assert exc.reason is not None
        return int(exc.reason.code)


async def garbage_and_foreign_ids(site: Site) -> None:
    """Garbage first, garbage mid-stream, and credit/cancel/stdin for stream ids this
    connection does not own: each closes that connection only and kills its command."""
    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    async with connect(site.url, "/ws/exec", context) as ws:
        await ws.send_message(b"\x00\x01\x02garbage")
        assert await closed_code(ws) == CloseCode.PROTOCOL_ERROR
    async with connect(site.url, "/ws/exec", context) as ws:
        await open_sleeper(ws, "garbage")
        await ws.send_message("{not json")
        assert await closed_code(ws) == CloseCode.PROTOCOL_ERROR
    # The bystanders' streams are numbered 1 on their own connections, never here.
    for frame in (
        encode(Credit(stream_id=2, bytes=1024)),
        encode(StreamCancel(stream_id=3)),
        encode_data(4, Channel.STDIN, 0, b"hijack"),
    ):
        async with connect(site.url, "/ws/exec", context) as ws:
            await open_sleeper(ws, "garbage")
            await ws.send_message(frame)
            assert await closed_code(ws) == CloseCode.UNKNOWN_STREAM
    await assert_no_orphans("garbage")


async def short_execs(site: Site, count: int) -> None:
    """``count`` concurrent ``/bin/true`` execs, each on its own connection: all exit 0."""
    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    exits: list[int | None] = []

    async def short() -> None:
        async with connect(site.url, "/ws/exec", context) as ws:
            session = StreamSession(ws)
            start = {"argv": ["/bin/true"], "env": {TAG_VAR: "short"}}
            (state,) = await session.open("exec", {"targets": [AGENT], "start": start})
            await session.run(_ignore)
            assert state.error is None, state.error
            exits.append(state.exit.code if state.exit is not None else None)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(short)
    assert exits == [0] * count
    await assert_no_orphans("short")


async def stalled_reader(site: Site, seq_last: int, stall: float) -> float:
    """``labctl exec … seq 1 SEQ_LAST`` whose stdout nobody reads for ``stall`` seconds, then
    everything: the remote writer is slowed (still running after the stall), nothing is lost,
    labctl exits 0. Returns labd's RSS growth during the stall, in MB."""
    argv = labctl("exec", "-e", f"{TAG_VAR}=slow", TARGET, "--", "seq", "1", str(seq_last))
    labd = site.labd.proc.pid
    base_rss, _ = proc_rss_mb(labd)
    peak = base_rss
    proc = await trio.lowlevel.open_process(argv, env=site.env(), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        received = bytearray(await proc.stdout.receive_some(1))  # started; now nobody reads
        deadline = trio.current_time() + stall
        while trio.current_time() < deadline:  # the fault itself is this stall
            peak = max(peak, proc_rss_mb(labd)[0])
            await trio.sleep(0.2)
        assert tagged_pids("slow"), "the remote command is gone"
        assert proc.returncode is None
        while chunk := await proc.stdout.receive_some(1 << 16):
            received += chunk
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
    expected = "".join(f"{i}\n" for i in range(1, seq_last + 1)).encode()
    assert bytes(received) == expected  # nothing lost, nothing reordered
    await assert_no_orphans("slow")
    return peak - base_rss


def exec_ends(data_dir: Path) -> list[dict[str, Any]]:
    """The ``exec:run`` end entries of labd's audit log (SQLite)."""
    db = sqlite3.connect(data_dir / "labd.db")
    try:
        rows = db.execute(
            "SELECT result, details FROM audit WHERE action = 'exec:run' ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    entries = [{"result": r, "details": json.loads(d)} for r, d in rows]
    return [e for e in entries if e["details"].get("phase") == "end"]


async def silent_client(site: Site, ping_timeout: float) -> None:
    """A client that opens an exec and then neither reads nor sends, socket kept open: labd
    ends the stream after its ping timeout and audits ``reason: ping timeout``."""
    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    with trio.CancelScope() as vanish:
        async with connect(site.url, "/ws/exec", context) as ws:
            start = {"argv": ["sleep", "60"], "env": {TAG_VAR: "silent"}}
            params = {"targets": [AGENT], "start": start, "keepalive": True}
            await ws.send_message(encode(Request(request_id="1", method="exec", params=params)))
            assert isinstance(decode(await ws.get_message()), Response)
            started = decode(await ws.get_message())
            assert isinstance(started, ExecStarted)
            pid = started.pid
            with trio.fail_after(ping_timeout + 10):
                await wait_process_gone(pid)
            vanish.cancel()  # leave without a close handshake

    def ended() -> list[dict[str, Any]]:
        return [e for e in exec_ends(site.data_dir) if e["details"].get("pid") == pid]

    # The end is audited as the relay leaves, right after the agent killed the process.
    ends = await await_for("the end's audit entry", ended)
    assert len(ends) == 1 and ends[0]["result"] == "error", ends
    assert ends[0]["details"]["reason"] == "ping timeout"
    await assert_no_orphans("silent")
