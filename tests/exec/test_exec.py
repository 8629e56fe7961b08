"""labctl exec through a real labd (fake hub at the seam, real processes)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess

import trio

from lab.proto import Channel
from lab.proto.messages import StreamCancel
from tests.exec.conftest import Lab, open_exec, pid_alive


async def test_exit_code_and_both_streams(lab: Lab) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl("exec", "server/alpha", "--", "sh", "-c", "echo out; echo err >&2; exit 3"),
            env=lab.env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"
    start, end = lab.audit("exec:run")[-2:]
    assert json.loads(start["details"])["phase"] == "start"
    assert json.loads(start["details"])["argv"][0] == "sh"
    assert json.loads(end["details"])["code"] == 3


async def test_stdin_is_echoed(lab: Lab) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl("exec", "-i", "server/alpha", "--", "cat"),
            env=lab.env(),
            stdin=b"hello\nworld\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\nworld\n"


async def test_env_and_cwd(lab: Lab) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl(
                "exec",
                "--env",
                "GREETING=hi there",
                "--cwd",
                "/tmp",
                "server/alpha",
                "--",
                "sh",
                "-c",
                'echo "$GREETING"; pwd',
            ),
            env=lab.env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi there\n/tmp\n"


async def test_timeout_ends_the_process(lab: Lab) -> None:
    with trio.fail_after(10):
        async with lab.connect("/ws/exec") as ws:
            session = await open_exec(ws, ["sleep", "60"], "alpha", timeout=1.0)
            sink_calls = []

            async def sink(*args: object) -> None:
                sink_calls.append(args)

            await session.run(sink)
    (state,) = session.streams.values()
    assert state.exit is not None
    assert state.exit.timed_out and state.exit.signal == "TERM"
    assert state.pid is not None and not pid_alive(state.pid)


async def ignore(*_: object) -> None:
    pass


async def test_cancelled_stream_kills_the_process(lab: Lab) -> None:
    with trio.fail_after(10):
        async with lab.connect("/ws/exec") as ws:
            session = await open_exec(ws, ["sleep", "60"], "alpha")
            (state,) = session.streams.values()
            while state.pid is None:
                await session.step(ignore)
            closed = lab.hub.closed
            await session.send(StreamCancel(stream_id=state.stream_id))
            await closed.wait()
    assert not pid_alive(state.pid)


async def test_killed_cli_leaves_no_remote_process(lab: Lab) -> None:
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            lab.labctl("exec", "server/alpha", "--", "sh", "-c", "echo $$; exec sleep 60"),
            env=lab.env(),
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(64)
            pid = int(line)
            assert pid_alive(pid)
            closed = lab.hub.closed
            proc.kill()
            await proc.wait()
            await closed.wait()
        finally:
            proc.kill()
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()
    assert not pid_alive(pid)


async def test_ctrl_c_interrupts_the_remote_group(lab: Lab) -> None:
    script = 'trap "echo interrupted; exit 7" INT; echo ready; while :; do sleep 1; done'
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            lab.labctl("exec", "server/alpha", "--", "sh", "-c", script),
            env=lab.env(),
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            out = b""
            while b"ready\n" not in out:
                out += await proc.stdout.receive_some(64)
            proc.send_signal(signal.SIGINT)
            while chunk := await proc.stdout.receive_some(64):
                out += chunk
            code = await proc.wait()
        finally:
            proc.kill()
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()
    assert out == b"ready\ninterrupted\n"
    assert code == 7


async def test_100_mb_arrive_byte_exact(lab: Lab) -> None:
    data_file = lab.tmp / "blob"
    expected = hashlib.sha256()
    with data_file.open("wb") as fh:
        for _ in range(100):
            chunk = os.urandom(1_000_000)
            expected.update(chunk)
            fh.write(chunk)
    got = hashlib.sha256()
    size = 0

    async def sink(_: object, channel: Channel, payload: bytes) -> None:
        nonlocal size
        assert channel == Channel.STDOUT
        got.update(payload)
        size += len(payload)

    with trio.fail_after(120):
        async with lab.connect("/ws/exec") as ws:
            session = await open_exec(ws, ["cat", str(data_file)], "alpha")
            await session.run(sink)
    (state,) = session.streams.values()
    assert state.exit is not None and state.exit.code == 0
    assert size == 100_000_000 == state.exit.bytes_out
    assert got.hexdigest() == expected.hexdigest()


async def test_output_cap_reports_dropped_bytes(lab: Lab) -> None:
    async def sink(*_: object) -> None:
        pass

    with trio.fail_after(30):
        async with lab.connect("/ws/exec") as ws:
            session = await open_exec(
                ws, ["head", "-c", "300000", "/dev/zero"], "alpha", output_cap=100_000
            )
            await session.run(sink)
    (state,) = session.streams.values()
    assert state.exit is not None
    assert (state.exit.bytes_out, state.exit.bytes_dropped) == (100_000, 200_000)


async def test_viewer_is_refused_and_audited(lab: Lab) -> None:
    home, _ = await lab.user_home("vera", ["viewer"])
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl("exec", "server/alpha", "--", "true"),
            env=lab.env(home),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 3
    assert b"user/vera may not exec:run on server/alpha" in result.stderr
    assert not lab.hub.opened
    (entry,) = lab.audit("exec:run")
    assert (entry["user"], entry["result"], entry["resource"]) == (
        "user/vera",
        "denied",
        "server/alpha",
    )


async def test_offline_and_unknown_servers(lab: Lab) -> None:
    with trio.fail_after(30):
        before = trio.current_time()
        offline = await trio.run_process(
            lab.labctl("exec", "server/offline", "--", "true"),
            env=lab.env(),
            capture_stderr=True,
            check=False,
        )
        unknown = await trio.run_process(
            lab.labctl("exec", "server/nosuch", "--", "true"),
            env=lab.env(),
            capture_stderr=True,
            check=False,
        )
    assert offline.returncode == 5
    assert b"agent not connected" in offline.stderr
    assert unknown.returncode == 4
    assert trio.current_time() - before < 10


async def test_offline_answer_is_fast(lab: Lab) -> None:
    with trio.fail_after(5):
        async with lab.connect("/ws/exec") as ws:
            before = trio.current_time()
            session = await open_exec(ws, ["true"], "offline")

            async def sink(*_: object) -> None:
                pass

            await session.run(sink)
            elapsed = trio.current_time() - before
    (state,) = session.streams.values()
    assert state.error is not None and state.error.code == "unavailable"
    assert state.error.status == 503
    assert elapsed < 1.0


async def test_fanout_prefixes_lines_and_summarises(lab: Lab) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl(
                "exec",
                "server/alpha",
                "server/beta",
                "server/offline",
                "--",
                "sh",
                "-c",
                "echo one; echo two; exit 2",
            ),
            env=lab.env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    lines = sorted(result.stdout.decode().splitlines())
    assert lines == [
        "alpha   | one",
        "alpha   | two",
        "beta    | one",
        "beta    | two",
    ]
    err = result.stderr.decode()
    assert "alpha    exit 2" in err
    assert "offline  error: agent not connected" in err
    assert "3 servers: 0 succeeded, 3 failed" in err


async def test_the_plain_form_runs_without_cyclopts(lab: Lab) -> None:
    """`labctl exec server/NAME -- CMD` never builds the command tree (start-up time)."""
    argv = lab.labctl("exec", "server/alpha", "--", "sh", "-c", "echo out; exit 4")
    with trio.fail_after(30):
        result = await trio.run_process(
            [argv[0], "-X", "importtime", *argv[1:]],
            env=lab.env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stdout == b"out\n"
    imported = [line.rsplit(b"|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert b"lab.cli.exec_run" in imported
    assert not [m for m in imported if m.startswith((b"cyclopts", b"lab.cli.commands"))]
