"""kill -9 of lab-agent leaves no command running for long: one on a pty dies with its pty at
once; one on pipes is killed by the next lab-agent that starts (lab.agent.leftovers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.faults.site import Site, await_for, labctl, start_site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    running = start_site(tmp_path)
    try:
        yield running
    finally:
        running.stop()


async def _gone(pid: int) -> None:
    """Returns when ``pid`` has exited (its pidfd turns readable; it may stay a zombie until
    whoever inherited it reaps it), without polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


@pytest.mark.parametrize("flag", ["-i", "-t"])
async def test_commands_die_with_the_agent(site: Site, tmp_path: Path, flag: str) -> None:
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 600"
    argv = labctl("exec", flag, "server/f1", "--", "sh", "-c", script)
    client = subprocess.Popen(
        argv,
        env=site.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid = 0
    try:
        with trio.fail_after(60):
            text = await await_for("the command's pid", lambda: _read(pid_file))
            pid = int(text)
            # The command is the agent's child, alive, before the agent dies.
            assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == (
                site.agent.proc.pid
            )
            site.agent.kill9()
            if flag == "-i":
                # Nothing reads its pipes, but it never writes, so nothing tells it: the next
                # agent does, before it connects.
                assert (site.tmp / "f1" / "running" / str(pid)).is_file()
                site.start_agent()
            await _gone(pid)
    finally:
        if pid:  # the command outlived the agent (the test fails): it must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        client.kill()
        client.wait()
        assert client.stdin is not None
        client.stdin.close()
