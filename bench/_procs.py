"""labd and lab-agents as separate processes, for benches that must not share one interpreter.

``async with process_fleet(tmp, agents) as fleet:`` starts ``python -m lab.labd.main`` (ready
when it says ``READY=1`` on a private notify socket), enrolls an admin user and ``agents``
lab-agents named n1..nN, starts ``lab-agent run`` for each and returns once labd logged every
one of them connected. Everything started is stopped (SIGTERM, then SIGKILL) on the way out.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.daemons import (  # noqa: E402
    READY_TIMEOUT,
    Daemon,
    clean_env,
    labd_env,
    port_of,
    proc_cpu_seconds,
    proc_rss_mb,
    reset_peak_rss,
    start_daemon,
)
from tests.hub.hubtools import enroll_state  # noqa: E402
from tests.labd.harness import Credentials, RunningLabd  # noqa: E402

from lab.client.credentials import Credentials as CliCredentials  # noqa: E402
from lab.client.credentials import save_credentials  # noqa: E402
from lab.labd.config import LabdConfig  # noqa: E402

__all__ = [
    "Daemon",
    "ProcessFleet",
    "RunningLabd",
    "clean_env",
    "labd_env",
    "port_of",
    "proc_cpu_seconds",
    "proc_rss_mb",
    "process_fleet",
    "reset_peak_rss",
    "start_daemon",
]


@attrs.define
class ProcessFleet:
    running: RunningLabd
    admin: Credentials
    home: Path
    labd: Daemon
    agents: list[Daemon]


@asynccontextmanager
async def process_fleet(
    tmp: Path, agents: int, *, labd_extra: dict[str, str] | None = None
) -> AsyncIterator[ProcessFleet]:
    py = sys.executable
    data = tmp / "labd"
    env = labd_env(data, LABD_AGENT_ADMIT_RATE="0", **(labd_extra or {}))
    async with trio.open_nursery() as nursery:
        labd, status = await start_daemon(nursery, "labd", [py, "-m", "lab.labd.main"], env, tmp)
        started = [labd]
        try:
            port = port_of(status)
            config = LabdConfig(host="127.0.0.1", port=port, data_dir=str(data))
            running = RunningLabd(config=config, host="127.0.0.1", port=port, shutdown=trio.Event())
            admin = await running.admin()
            home = tmp / "home"
            save_credentials(
                home,
                CliCredentials(
                    ca_pem=running.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem
                ),
            )
            names = [f"n{i}" for i in range(1, agents + 1)]
            daemons = []
            for name in names:
                await enroll_state(running, admin, name, tmp / name)
                agent_env = clean_env(LAB_AGENT_STATE_DIR=str(tmp / name))
                agent, _ = await start_daemon(
                    nursery, name, [py, "-m", "lab.agent.main", "run"], agent_env, tmp
                )
                started.append(agent)
                daemons.append(agent)
            with trio.fail_after(READY_TIMEOUT):
                await labd.wait_connected(set(names))
            pids = " ".join(str(d.pid) for d in daemons[:8])
            print(f"labd pid {labd.pid}, agent pids {pids}", file=sys.stderr, flush=True)
            yield ProcessFleet(running=running, admin=admin, home=home, labd=labd, agents=daemons)
        finally:
            with trio.CancelScope(shield=True):
                for daemon in reversed(started):
                    await daemon.stop()
