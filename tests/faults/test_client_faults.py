"""One client's fault never touches another session: each case runs next to five untouched
sessions (tests/faults/bystanders.py) on one real labd and one real lab-agent, and asserts
their full output, exit codes, the agent's unchanged session and that no process is left."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed

from lab.cli.wsclient import StreamSession, StreamState, connect
from lab.proto import Channel, CloseCode, encode, encode_data
from lab.proto.messages import Credit, StreamCancel
from tests.faults.bystanders import bystanders
from tests.faults.site import (
    AGENT,
    TAG_VAR,
    Site,
    assert_no_orphans,
    labctl,
    start_site,
)
from tests.hub.hubtools import wait_process_gone

TARGET = f"server/{AGENT}"
# The issue asks for 50 runs in a row; the default suite runs them in parallel batches and
# fewer of them (this 2-core box pays ~1 s of CPU per labctl); bench/faults.py runs 50.
HEAD_RUNS = 8
HEAD_BATCH = 4
# 200 in the issue and in bench/faults.py; the same number here, each on its own connection.
SHORT_EXECS = 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_site(tmp_path_factory.mktemp("faults"))
    try:
        yield running
    finally:
        running.stop()


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


async def test_closed_stdout_again_and_again(site: Site) -> None:
    """labctl exec | head -1 (HEAD_RUNS times), get audit | head -1, get servers -o json |
    head -3, logs -f | head -1: quiet exits, no remote process, nobody else disturbed."""
    argv = labctl("exec", "-e", f"{TAG_VAR}=head", TARGET, "--", "seq", "1", "2000000")
    results: list[tuple[int, bytes, bytes]] = []

    async def one() -> None:
        results.append(await trio.to_thread.run_sync(pipeline, argv, site.env()))

    with trio.fail_after(180):
        async with bystanders(site, "head") as crowd:
            for _ in range(HEAD_RUNS // HEAD_BATCH):
                async with trio.open_nursery() as nursery:
                    for _ in range(HEAD_BATCH):
                        nursery.start_soon(one)
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
            await crowd.checkpoint("| head")
            await assert_no_orphans("head")
            await crowd.finish()
    assert results == [(141, b"", b"1\n")] * HEAD_RUNS


async def test_kill_9_of_labctl_exec_with_stdin_and_tty(site: Site) -> None:
    with trio.fail_after(120):
        async with bystanders(site, "kill") as crowd:
            for flag in ("-i", "-t"):
                await kill_9_midway(site, flag)
                await crowd.checkpoint(f"kill -9 of labctl exec {flag}")
            await crowd.finish()


async def kill_9_midway(site: Site, flag: str) -> None:
    """``labctl exec FLAG`` killed with SIGKILL while its command runs: the command is gone."""
    tag = f"kill{flag}"
    script = "echo $$; exec sleep 60"
    argv = labctl("exec", flag, "-e", f"{TAG_VAR}={tag}", TARGET, "--", "sh", "-c", script)
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


async def open_sleeper(site: Site, ws: object, tag: str) -> StreamSession:
    session = StreamSession(ws)  # type: ignore[arg-type]
    start = {"argv": ["sleep", "60"], "env": {TAG_VAR: tag}}
    (state,) = await session.open("exec", {"targets": [AGENT], "start": start})

    async def ignore(_: StreamState, channel: Channel, data: bytes) -> None:
        pass

    while state.pid is None:
        assert await session.step(ignore)
    return session


async def closed_code(ws: object) -> int:
    """Read until labd closes the connection; its close code."""
    try:
        while True:
            await ws.get_message()  # type: ignore[attr-defined]
    except ConnectionClosed as exc:
        assert exc.reason is not None
        return int(exc.reason.code)


async def test_garbage_and_foreign_stream_ids(site: Site) -> None:
    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    with trio.fail_after(120):
        async with bystanders(site, "garbage") as crowd:
            # Binary garbage instead of the request.
            async with connect(site.url, "/ws/exec", context) as ws:
                await ws.send_message(b"\x00\x01\x02garbage")
                assert await closed_code(ws) == CloseCode.PROTOCOL_ERROR
            # Text that is not JSON in the middle of a running stream.
            async with connect(site.url, "/ws/exec", context) as ws:
                await open_sleeper(site, ws, "garbage")
                await ws.send_message("{not json")
                assert await closed_code(ws) == CloseCode.PROTOCOL_ERROR
            # Credit, cancel and stdin for streams this connection does not have: the
            # bystanders' streams are numbered 1 on their own connections, never here.
            for frame in (
                encode(Credit(stream_id=2, bytes=1024)),
                encode(StreamCancel(stream_id=3)),
                encode_data(4, Channel.STDIN, 0, b"hijack"),
            ):
                async with connect(site.url, "/ws/exec", context) as ws:
                    await open_sleeper(site, ws, "garbage")
                    await ws.send_message(frame)
                    assert await closed_code(ws) == CloseCode.UNKNOWN_STREAM
            await crowd.checkpoint("garbage and foreign stream ids")
            await assert_no_orphans("garbage")
            await crowd.finish()


async def test_many_short_execs_at_once(site: Site) -> None:
    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    exits: list[int | None] = []

    async def short() -> None:
        async with connect(site.url, "/ws/exec", context) as ws:
            session = StreamSession(ws)
            start = {"argv": ["/bin/true"], "env": {TAG_VAR: "short"}}
            (state,) = await session.open("exec", {"targets": [AGENT], "start": start})

            async def ignore(_: StreamState, channel: Channel, data: bytes) -> None:
                pass

            await session.run(ignore)
            assert state.error is None, state.error
            exits.append(state.exit.code if state.exit is not None else None)

    with trio.fail_after(180):
        async with bystanders(site, "short") as crowd:
            async with trio.open_nursery() as nursery:
                for _ in range(SHORT_EXECS):
                    nursery.start_soon(short)
            await crowd.checkpoint(f"{SHORT_EXECS} concurrent short execs")
            await assert_no_orphans("short")
            await crowd.finish()
    assert exits == [0] * SHORT_EXECS
