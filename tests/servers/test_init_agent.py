"""labctl init agent standalone: enroll once, run lab-agent in the background, status, stop."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.labd.harness import running_labd
from tests.servers.cli import labctl, login_env

# `lab-agent run` is started as `python -m lab.agent.main run`.
AGENT_MAIN = importlib.util.find_spec("lab.agent.main") is not None

_HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from lab.runtime.pidfile import hold\n"
    "with hold(Path(sys.argv[1])):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(1000)\n"
)


@asynccontextmanager
async def holding_pid_file(path: Path) -> AsyncIterator[int]:
    """A process whose command line says lab-agent and that holds ``path``'s lock."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), "lab-agent"], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert await trio.to_thread.run_sync(proc.stdout.readline) == b"held\n"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


async def test_status_and_stop_when_nothing_runs(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            env = login_env(
                labd, admin, tmp_path / "home", LAB_AGENT_STATE_DIR=str(tmp_path / "agent")
            )
            done = await labctl(env, "init", "agent", "standalone", "status", "-o", "json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {
                "running": False,
                "pid": None,
                "server": labd.url,
                "name": None,
                "online": False,
            }
            done = await labctl(env, "init", "agent", "standalone", "stop")
            assert done.returncode == 0 and "not running" in done.stdout


async def test_second_start_is_refused_before_enrolling(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            state = tmp_path / "agent"
            state.mkdir(mode=0o700)
            env = login_env(labd, admin, tmp_path / "home", LAB_AGENT_STATE_DIR=str(state))
            # A live lab-agent holds the pid file (a stand-in that only takes the lock).
            async with holding_pid_file(state / "lab-agent.pid") as holder:
                done = await labctl(env, "init", "agent", "standalone", "start", "--name", "box1")
            assert done.returncode == 1
            assert f"already running (pid {holder})" in done.stderr
            assert not (state / "agent.yaml").exists()
            async with labd.client(admin) as http:
                tokens = (await http.get("/api/tokens")).json()["items"]
                assert [t for t in tokens if t["kind"] == "agent"] == []


async def test_start_enrolls_runs_and_stops(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            state = tmp_path / "agent"
            env = login_env(labd, admin, tmp_path / "home", LAB_AGENT_STATE_DIR=str(state))
            start = ("init", "agent", "standalone", "start", "--name", "box1", "--wait", "30")
            try:
                done = await labctl(env, *start)
                assert "enrolled as server/box1" in done.stdout
                if AGENT_MAIN:
                    assert done.returncode == 0, done.stderr
                    assert "lab-agent started" in done.stdout
                    status = await labctl(
                        env, "init", "agent", "standalone", "status", "-o", "json"
                    )
                    report = json.loads(status.stdout)
                    assert report["running"] and report["online"] is True
                    assert report["name"] == "box1" and report["server"] == labd.url
                    listed = await labctl(env, "get", "servers", "-o", "json")
                    (item,) = json.loads(listed.stdout)
                    assert item["name"] == "box1" and item["status"] == "online"
                    assert item["replica"] and item["last_seen"] and item["agent_version"]
                    again = await labctl(env, *start)
                    assert again.returncode == 1 and "already running" in again.stderr
                else:
                    # No `lab-agent run` yet: the background process exits and start says why.
                    assert done.returncode == 5, done.stderr
                    assert "lab.agent.main" in done.stderr
                    assert "lab-agent.log" in done.stderr
                # Enrolled once, with a one-time token that is now used up.
                assert (state / "agent.yaml").is_file() and (state / "key.pem").is_file()
                async with labd.client(admin) as http:
                    server = (await http.get("/api/servers/box1")).json()
                    assert server["name"] == "box1" and server["cert_serial"]
                    tokens = (await http.get("/api/tokens")).json()["items"]
                    agent_tokens = [t for t in tokens if t["kind"] == "agent"]
                    assert len(agent_tokens) == 1 and agent_tokens[0]["uses"] == 1
            finally:
                stop = await labctl(env, "init", "agent", "standalone", "stop")
            assert stop.returncode == 0, stop.stderr
            assert not (state / "lab-agent.pid").exists()
