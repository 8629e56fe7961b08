from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio
from agent_exec_helpers import Peer, is_running, wait_gone

from lab.agent.executor import run_exec
from lab.proto.frames import Channel
from lab.proto.messages import ExecStart, Resize, Signal, SignalName, StdinClose


def start(*argv: str, **kw: object) -> ExecStart:
    return ExecStart(stream_id=7, argv=list(argv), **kw)  # type: ignore[arg-type]


async def run(peer: Peer, msg: ExecStart, **kw: object):
    with trio.fail_after(10):
        return await run_exec(msg, peer.send, control=peer.control, **kw)  # type: ignore[arg-type]


async def test_both_streams_and_exit_code(peer: Peer) -> None:
    result = await run(peer, start("sh", "-c", "echo out; echo err >&2; exit 3"))
    assert peer.text(Channel.STDOUT) == "out\n"
    assert peer.text(Channel.STDERR) == "err\n"
    assert result.code == 3 and result.signal is None
    assert result.bytes_out == 8 and result.bytes_dropped == 0 and not result.timed_out
    assert peer.order[0] == "exec-started" and peer.order[-1] == "exec-exit"
    assert peer.exit == result


async def test_env_is_minimal_and_merged(peer: Peer, tmp_path: Path) -> None:
    os.environ["LABCTL_TEST_SECRET"] = "leak"
    try:
        await run(
            peer,
            start(
                "sh",
                "-c",
                'echo "$FOO|${LABCTL_TEST_SECRET:-}|$PWD"',
                env={"FOO": "bar"},
                cwd=str(tmp_path),
            ),
        )
    finally:
        del os.environ["LABCTL_TEST_SECRET"]
    assert peer.text(Channel.STDOUT) == f"bar||{tmp_path}\n"


async def test_stdin_is_piped_to_the_process(peer: Peer) -> None:
    send_stdin, recv_stdin = trio.open_memory_channel[bytes](4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_exec(
                start("cat", stdin=True), peer.send, stdin=recv_stdin, control=peer.control
            )
        )
        await send_stdin.send(b"hello ")
        await send_stdin.send(b"world\n")
        with trio.fail_after(5):
            await peer.wait_for(lambda: peer.data[Channel.STDOUT] == b"hello world\n")
        await send_stdin.aclose()
        with trio.fail_after(5):
            await peer.wait_for(lambda: bool(peer.input.exit))
    assert peer.exit.code == 0


async def test_stdin_close_message_ends_input(peer: Peer) -> None:
    send_stdin, recv_stdin = trio.open_memory_channel[bytes](4)
    async with send_stdin:
        await send_stdin.send(b"abc")
        await peer.control_send.send(StdinClose(stream_id=7))
        result = await run(peer, start("cat", stdin=True), stdin=recv_stdin)
    assert result.code == 0
    assert peer.data[Channel.STDOUT] == b"abc"


async def test_timeout_terminates_the_group(peer: Peer) -> None:
    result = await run(peer, start("sleep", "60", timeout=0.2))
    assert result.timed_out and result.signal == "TERM" and result.code is None
    assert not is_running(peer.started.pid)


async def test_timeout_escalates_to_kill(peer: Peer) -> None:
    # An ignored SIGTERM is inherited by sleep, so only SIGKILL ends the group.
    result = await run(
        peer, start("sh", "-c", "trap '' TERM; sleep 60", timeout=0.2), kill_grace=0.3
    )
    assert result.timed_out and result.signal == "KILL"


async def test_signal_is_forwarded(peer: Peer) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run(peer, start("sleep", "60")))
        await peer.wait_for(lambda: bool(peer.messages))
        await peer.control_send.send(Signal(stream_id=7, name=SignalName.INT))
    assert peer.exit.signal == "INT" and not peer.exit.timed_out


async def test_cancellation_kills_the_whole_group(peer: Peer) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run(peer, start("sh", "-c", "sleep 60 & echo $!; wait")))
        with trio.fail_after(5):
            await peer.wait_for(lambda: peer.data[Channel.STDOUT].endswith(b"\n"))
        child = int(peer.text(Channel.STDOUT))
        leader = peer.started.pid
        assert is_running(child)
        nursery.cancel_scope.cancel()
    # run_exec reaps the leader before returning; the orphaned sleep must be dead too.
    assert not is_running(leader)
    await wait_gone(child)
    assert not is_running(child)
    assert not any(m.TYPE == "exec-exit" for m in peer.messages)


async def test_exit_waits_for_output_of_background_children(peer: Peer) -> None:
    result = await run(peer, start("sh", "-c", "(sleep 0.2; echo late) & echo early"))
    assert peer.text(Channel.STDOUT) == "early\nlate\n"
    assert result.code == 0 and peer.order[-1] == "exec-exit"


async def test_five_megabytes_byte_exact(peer: Peer, tmp_path: Path) -> None:
    blob = os.urandom(5 * 1024 * 1024)
    path = tmp_path / "blob"
    path.write_bytes(blob)
    result = await run(peer, start("cat", str(path)))
    got = bytes(peer.data[Channel.STDOUT])
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(blob).hexdigest()
    assert result.bytes_out == len(blob) and result.code == 0


def _wchan(pid: int) -> str:
    with open(f"/proc/{pid}/wchan") as f:
        return f.read()


async def test_no_credit_blocks_the_process() -> None:
    peer = Peer(window=1000, auto_credit=False)
    total = 1024 * 1024
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run(peer, start("head", "-c", str(total), "/dev/zero"), window=1000)
        )
        with trio.fail_after(5):
            await peer.wait_for(lambda: len(peer.data[Channel.STDOUT]) == 1000)
            pid = peer.started.pid
            # Out of credit, the pump stops reading: head fills the pipe and blocks writing.
            while "pipe_write" not in _wchan(pid):
                await trio.sleep(0.01)
        assert len(peer.data[Channel.STDOUT]) == 1000 and is_running(pid)
        received = 1000
        while received < total:
            await peer.grant(64 * 1024)
            with trio.fail_after(5):
                await peer.wait_for(
                    lambda: (
                        len(peer.data[Channel.STDOUT]) == min(total, peer.granted)
                        or bool(peer.input.exit)
                    )
                )
            received = len(peer.data[Channel.STDOUT])
            # Never more than granted: the peer's InputStream would also have raised.
            assert received <= peer.granted
    assert peer.exit.code == 0 and peer.exit.bytes_out == total


async def test_output_cap_counts_dropped_bytes(peer: Peer) -> None:
    result = await run(peer, start("head", "-c", "100000", "/dev/zero", output_cap=1000))
    assert len(peer.data[Channel.STDOUT]) == 1000
    assert result.bytes_out == 1000 and result.bytes_dropped == 99000 and result.code == 0


async def test_tty_mode_runs_on_a_pty(peer: Peer) -> None:
    result = await run(peer, start("sh", "-c", "tty; stty size", tty=True, rows=33, cols=101))
    lines = peer.text(Channel.STDOUT).splitlines()
    assert lines[0].startswith("/dev/pts/") and lines[1] == "33 101"
    assert result.code == 0 and peer.data[Channel.STDERR] == b""


async def test_tty_resize(peer: Peer) -> None:
    script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run(peer, start("sh", "-c", script, tty=True)))
        with trio.fail_after(5):
            await peer.wait_for(lambda: b"ready" in peer.data[Channel.STDOUT])
        await peer.control_send.send(Resize(stream_id=7, rows=40, cols=120))
    assert peer.text(Channel.STDOUT).splitlines()[-1] == "40 120"
    assert peer.exit.code == 0


async def test_missing_program_raises(peer: Peer) -> None:
    with pytest.raises(FileNotFoundError):
        await run(peer, start("/nonexistent/program"))
    assert peer.messages == []


async def test_stdin_credit_is_granted_as_input_is_written() -> None:
    peer = Peer(window=8)
    send_stdin, recv_stdin = trio.open_memory_channel[bytes](8)
    async with send_stdin:
        for piece in (b"abcd", b"efgh", b"ijkl"):
            await send_stdin.send(piece)
    result = await run(peer, start("cat", stdin=True), stdin=recv_stdin, window=8)
    assert peer.data[Channel.STDOUT] == b"abcdefghijkl" and result.code == 0
    grants = [m for m in peer.messages if m.TYPE == "credit"]
    assert grants and all(m.stream_id == 7 for m in grants)
    assert sum(m.bytes for m in grants) == 12  # every written byte is granted back
