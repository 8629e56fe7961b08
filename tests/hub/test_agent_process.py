"""`lab-agent enroll`, `run` and `status` as real processes against an in-process labd."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import trio

from lab.proto.messages import Error, ExecStart, ExecStarted
from tests.e2e.procs import clean_env
from tests.hub.hubtools import labd_with_hub, wait_process_gone


async def lab_agent(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "lab.agent.main", *args],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_lab_agent_run_status_and_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "agent"
    env = clean_env(LAB_AGENT_STATE_DIR=str(state))
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            token = await labd.running.create_token(admin, "agent")
            enrolled = await lab_agent(
                "enroll",
                "--server",
                labd.running.url,
                "--token",
                token,
                "--insecure-trust-on-first-use",
                "--hostname",
                "proc1",
                env=env,
            )
            assert enrolled.returncode == 0, enrolled.stderr.decode()
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "lab.agent.main", "run"], env=env
            )
            try:
                await labd.hub.wait_online("proc1")
                status = await lab_agent("status", "-o", "json", env=env)
                assert status.returncode == 0, status.stderr.decode()
                info = json.loads(status.stdout)
                assert info["running"] is True and info["pid"] == proc.pid
                assert (info["server_name"], info["server"]) == ("proc1", labd.running.url)
                assert info["state_dir"] == str(state)

                start = ExecStart(stream_id=1, argv=["sleep", "60"])
                async with labd.hub.agent_stream("proc1", start) as stream:
                    started = await stream.__anext__()
                    assert isinstance(started, ExecStarted)
                    proc.send_signal(signal.SIGTERM)
                    assert await proc.wait() == 0
                    last = await stream.__anext__()
                    assert isinstance(last, Error) and last.code == "unavailable"
                # SIGTERM killed the running command's process group on the way out.
                await wait_process_gone(started.pid)
                await labd.hub.wait_offline("proc1")
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            status = await lab_agent("status", "-o", "json", env=env)
            assert json.loads(status.stdout)["running"] is False
            assert not (state / "lab-agent.pid").exists()
