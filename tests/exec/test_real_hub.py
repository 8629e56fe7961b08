"""labctl exec and logs end to end: CLI → labd relay → agent hub → a real lab-agent."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from lab.agent.daemon import run_agent
from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from lab.client.wsclient import StreamSession, StreamState, connect
from lab.proto import Channel
from tests.exec.conftest import pid_alive
from tests.hub.hubtools import Labd, enroll_state, labd_with_hub, wait_process_gone
from tests.labd.harness import Credentials


@attrs.define
class Fleet:
    labd: Labd
    admin: Credentials
    home: Path
    log: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LABCTL_HOME": str(self.home),
            "LABCTL_CONFIG": str(self.home / "config.yaml"),
            "LABCTL_SERVER": self.labd.running.url,
        }


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    log = tmp_path / "app.log"
    log.write_text("boot\n")
    async with labd_with_hub(tmp_path) as labd:
        admin = await labd.running.admin()
        home = tmp_path / "home"
        save_credentials(
            home,
            CliCredentials(
                ca_pem=labd.running.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem
            ),
        )
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            for name in ("n1", "n2"):
                settings = await enroll_state(
                    labd.running, admin, name, tmp_path / name, log_sources={"app": log}
                )
                agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
                with trio.fail_after(10):
                    await agent.wait_connected()
            try:
                yield Fleet(labd=labd, admin=admin, home=home, log=log)
            finally:
                shutdown.set()


async def labctl(
    fleet: Fleet, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=fleet.env(),
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_exit_code_streams_and_stdin(fleet: Fleet) -> None:
    with trio.fail_after(30):
        both = await labctl(
            fleet, "exec", "server/n1", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
        )
        echoed = await labctl(fleet, "exec", "-i", "server/n1", "--", "cat", stdin=b"ping\n")
    assert (both.returncode, both.stdout, both.stderr) == (3, b"out\n", b"err\n")
    assert (echoed.returncode, echoed.stdout) == (0, b"ping\n")


async def test_timeout_kills_the_remote_group(fleet: Fleet) -> None:
    with trio.fail_after(10):
        async with connect(
            fleet.labd.running.url,
            "/ws/exec",
            fleet.labd.running.ssl_context(fleet.admin, alpn=["http/1.1"]),
        ) as ws:
            session = StreamSession(ws)
            await session.open(
                "exec", {"targets": ["n1"], "start": {"argv": ["sleep", "60"], "timeout": 1.0}}
            )

            async def sink(*_: object) -> None:
                pass

            await session.run(sink)
    (state,) = session.streams.values()
    assert state.exit is not None and state.exit.timed_out
    assert state.pid is not None
    with trio.fail_after(5):
        await wait_process_gone(state.pid)


async def test_killed_cli_leaves_no_remote_process(fleet: Fleet) -> None:
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "lab.cli.main",
                "exec",
                "server/n1",
                "--",
                "sh",
                "-c",
                "echo $$; exec sleep 60",
            ],
            env=fleet.env(),
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(64)
            pid = int(line)
            assert pid_alive(pid)
            proc.kill()
            await proc.wait()
            await wait_process_gone(pid)
        finally:
            proc.kill()
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


async def test_100_mb_byte_exact(fleet: Fleet, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    expected = hashlib.sha256()
    with blob.open("wb") as fh:
        for _ in range(100):
            chunk = os.urandom(1_000_000)
            expected.update(chunk)
            fh.write(chunk)
    got = hashlib.sha256()

    async def sink(_: StreamState, channel: Channel, payload: bytes) -> None:
        got.update(payload)

    with trio.fail_after(120):
        async with connect(
            fleet.labd.running.url,
            "/ws/exec",
            fleet.labd.running.ssl_context(fleet.admin, alpn=["http/1.1"]),
        ) as ws:
            session = StreamSession(ws)
            await session.open("exec", {"targets": ["n1"], "start": {"argv": ["cat", str(blob)]}})
            await session.run(sink)
    (state,) = session.streams.values()
    assert state.exit is not None and state.exit.code == 0
    assert state.exit.bytes_out == 100_000_000
    assert got.hexdigest() == expected.hexdigest()


async def test_fanout_and_logs_follow(fleet: Fleet) -> None:
    with trio.fail_after(30):
        fan = await labctl(fleet, "exec", "server/n1", "server/n2", "--", "echo", "hi")
    assert fan.returncode == 0, fan.stderr
    assert sorted(fan.stdout.splitlines()) == [b"n1 | hi", b"n2 | hi"]

    lines: list[bytes] = []
    arrived = trio.Event()

    async def sink(_: StreamState, channel: Channel, payload: bytes) -> None:
        nonlocal arrived
        lines.append(payload)
        arrived.set()

    with trio.fail_after(15):
        async with connect(
            fleet.labd.running.url,
            "/ws/logs",
            fleet.labd.running.ssl_context(fleet.admin, alpn=["http/1.1"]),
        ) as ws:
            session = StreamSession(ws)
            await session.open(
                "logs", {"targets": ["n2"], "start": {"source": "app", "follow": True}}
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run, sink)
                await arrived.wait()
                arrived = trio.Event()
                with fleet.log.open("a") as fh:
                    fh.write("appended\n")
                await arrived.wait()
                nursery.cancel_scope.cancel()
    assert lines == [b"boot", b"appended"]
