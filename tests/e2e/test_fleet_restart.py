"""labd and two lab-agent processes: the agents come back after labd is stopped with SIGTERM and
started again, and after labd is killed with SIGKILL; a revoked agent is cut off."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import trio

from lab.labd.config import LabdConfig
from tests.e2e.daemons import Daemon, clean_env, labd_env, start_daemon
from tests.e2e.procs import free_port
from tests.hub.hubtools import enroll_state
from tests.labd.harness import RunningLabd

AGENTS = {"a", "b"}


async def start_labd(nursery: trio.Nursery, tmp: Path, port: int, tag: str) -> Daemon:
    argv = [sys.executable, "-m", "lab.labd.main"]
    env = labd_env(tmp / "labd", port=port, LABD_AGENT_ADMIT_RATE="0")
    daemon, _ = await start_daemon(nursery, f"labd-{tag}", argv, env, tmp)
    return daemon


async def test_agents_come_back_after_sigterm_and_sigkill_of_labd(tmp_path: Path) -> None:
    port = free_port()
    started: list[Daemon] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            try:
                labd = await start_labd(nursery, tmp_path, port, "1")
                started.append(labd)
                config = LabdConfig(host="127.0.0.1", port=port, data_dir=str(tmp_path / "labd"))
                api = RunningLabd(config=config, host="127.0.0.1", port=port, shutdown=trio.Event())
                admin = await api.admin()
                agents = []
                for name in sorted(AGENTS):
                    await enroll_state(api, admin, name, tmp_path / name)
                    env = clean_env(LAB_AGENT_STATE_DIR=str(tmp_path / name))
                    argv = [sys.executable, "-m", "lab.agent.main", "run"]
                    agent, _ = await start_daemon(nursery, name, argv, env, tmp_path)
                    started.append(agent)
                    agents.append(agent)
                await labd.wait_connected(AGENTS)

                # A graceful stop: agents are told when to come back (staggered retry_after).
                labd.proc.send_signal(signal.SIGTERM)
                assert await labd.proc.wait() == 0
                labd = await start_labd(nursery, tmp_path, port, "2")
                started.append(labd)
                await labd.wait_connected(AGENTS)

                # A crash: no goodbye, the agents notice the dead connection and back off.
                labd.proc.send_signal(signal.SIGKILL)
                await labd.proc.wait()
                labd = await start_labd(nursery, tmp_path, port, "3")
                started.append(labd)
                await labd.wait_connected(AGENTS)
                assert all(a.proc.returncode is None for a in agents)
            finally:
                with trio.CancelScope(shield=True):
                    for daemon in reversed(started):
                        await daemon.stop()
                nursery.cancel_scope.cancel()
