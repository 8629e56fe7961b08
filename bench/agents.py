"""Many agents on one labd: memory and CPU at steady state, and coming back after a restart.

Run: ``python bench/agents.py [--agents 1000] [--steady 20] [--admit-rate 200] [--load-procs 1]``
(``--agents 10000 --load-procs 4`` for the large case: one Python process cannot drive 10,000
agents' TLS handshakes within their timeouts). labd runs as its own process; N agents, each
with its own enrolled identity (one reusable join token with ``max_uses N``), run as real
lab-agent connection drivers in separate load processes (bench/_agent_load.py), the agents
split evenly between them. Prints:

- ``agents_online_N``: seconds from starting the load process until all N are welcomed;
- ``agents_labd_rss_N``: labd's RSS in MB with N agents connected (goal: 10,000 in ≤ 1 GB);
- ``agents_labd_kb_per_session_N``: labd's RSS growth from enrolled-but-idle to N agents
  connected, per agent session, in KB; ``agents_labd_rss_projected_10000``: labd's idle RSS
  plus 10,000 such sessions;
- ``agents_labd_cpu_N``: labd's CPU at steady state (heartbeats only) in % of one core,
  measured over ``--steady`` seconds;
- ``agents_restart_N``: seconds from SIGTERM to labd until all N agents are welcomed again by
  a new labd on the same port and data dir (goal: ≤ 60 s); this includes the
  ``server-shutdown`` ``retry_after`` spread (1 to 10 s) and the admission rate;
- ``agents_restart_after_ready_N``: the same, counted from the new labd's READY.

No baselines: nothing comparable runs here.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import (  # puts the repository root on sys.path for tests.*
    RunningLabd,
    clean_env,
    labd_env,
    port_of,
    proc_cpu_seconds,
    proc_rss_mb,
    start_daemon,
)
from exec_latency import emit
from lab.agent.identity import enroll
from lab.labd.config import LabdConfig

ENROLL_CONCURRENCY = 16
ONLINE_TIMEOUT = 600.0
PROJECTED = 10_000


def raise_fd_limit(needed: int) -> None:
    """Children inherit it: labd and the load process each hold one socket per agent."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        print(f"warning: RLIMIT_NOFILE {hard} < {needed}; raise it (ulimit -Hn)", file=sys.stderr)


async def enroll_all(running: RunningLabd, root: Path, n: int) -> None:
    admin = await running.admin()
    token = await running.create_token(admin, "agent", reusable=True, max_uses=n)
    limiter = trio.CapacityLimiter(ENROLL_CONCURRENCY)

    async def one(i: int) -> None:
        async with limiter:
            await enroll(
                running.url,
                token,
                hostname=f"a{i}",
                facts={"agent_version": "bench"},
                ca_fingerprint=None,
                tofu=True,
                state_dir=root / f"a{i}",
            )

    async with trio.open_nursery() as nursery:
        for i in range(1, n + 1):
            nursery.start_soon(one, i)


class Online:
    """When every load process had all its agents welcomed for the G-th time (the last one)."""

    def __init__(self, procs: int) -> None:
        self.procs = procs
        self.seen: dict[int, list[float]] = {}
        self.events: dict[int, trio.Event] = {}

    def event(self, generation: int) -> trio.Event:
        return self.events.setdefault(generation, trio.Event())

    def reached(self, generation: int, seconds: float) -> None:
        seen = self.seen.setdefault(generation, [])
        seen.append(seconds)
        if len(seen) == self.procs:
            self.event(generation).set()


async def read_online(proc: trio.Process, online: Online) -> None:
    """Parse a load process's ``online G SECONDS`` lines."""
    assert proc.stdout is not None
    buffered = b""
    async for chunk in proc.stdout:
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            word, generation, seconds = line.decode().split()
            assert word == "online"
            online.reached(int(generation), float(seconds))


async def wait_online(online: Online, generation: int) -> float:
    with trio.fail_after(ONLINE_TIMEOUT):
        await online.event(generation).wait()
    return max(online.seen[generation])


async def main(n: int, steady: float, admit_rate: float, procs: int) -> None:
    raise_fd_limit(n + 1000)
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "labd"
        extra = {"LABD_AGENT_ADMIT_RATE": str(admit_rate), "LABD_LOG_LEVEL": "warning"}
        async with trio.open_nursery() as nursery:
            labd, status = await start_daemon(
                nursery, "labd", [py, "-m", "lab.labd.main"], labd_env(data, **extra), tmp
            )
            port = port_of(status)
            config = LabdConfig(host="127.0.0.1", port=port, data_dir=str(data))
            running = RunningLabd(config=config, host="127.0.0.1", port=port, shutdown=trio.Event())
            loads: list[trio.Process] = []
            try:
                await enroll_all(running, tmp / "agents", n)
                rss_idle, _ = proc_rss_mb(labd.pid)
                events = Online(procs)
                t0 = time.monotonic()
                loader = str(Path(__file__).parent / "_agent_load.py")
                for first, count in split(n, procs):
                    load = await trio.lowlevel.open_process(
                        [py, loader, str(tmp / "agents"), str(count), str(first)],
                        env=clean_env(),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                    loads.append(load)
                    nursery.start_soon(read_online, load, events)
                online = await wait_online(events, 1) - t0
                emit(f"agents_online_{n}", online, "s", None)

                cpu0, w0 = proc_cpu_seconds(labd.pid), time.monotonic()
                await trio.sleep(steady)  # the measurement window itself, not a synchronisation
                cpu = (proc_cpu_seconds(labd.pid) - cpu0) / (time.monotonic() - w0) * 100
                rss, _ = proc_rss_mb(labd.pid)
                emit(f"agents_labd_rss_{n}", rss, "MB", None)
                per_session = (rss - rss_idle) * 1024 / n
                emit(f"agents_labd_kb_per_session_{n}", per_session, "KB", None)
                emit(
                    f"agents_labd_rss_projected_{PROJECTED}",
                    rss_idle + per_session * PROJECTED / 1024,
                    "MB",
                    None,
                )
                emit(f"agents_labd_cpu_{n}", cpu, "%", None)

                t_term = time.monotonic()
                await labd.stop()
                labd, _ = await start_daemon(
                    nursery,
                    "labd2",
                    [py, "-m", "lab.labd.main"],
                    labd_env(data, port, **extra),
                    tmp,
                )
                t_ready = time.monotonic()
                back = await wait_online(events, 2)
                emit(f"agents_restart_{n}", back - t_term, "s", None)
                emit(f"agents_restart_after_ready_{n}", back - t_ready, "s", None)
            finally:
                with trio.CancelScope(shield=True):
                    for load in loads:
                        load.terminate()
                    for load in loads:
                        with trio.move_on_after(30):
                            await load.wait()
                        load.kill()
                        await load.wait()
                    await labd.stop()
                nursery.cancel_scope.cancel()


def split(n: int, procs: int) -> list[tuple[int, int]]:
    """(first agent, count) for each load process: ``n`` agents split evenly."""
    procs = max(1, min(procs, n))
    sizes = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    starts = [1 + sum(sizes[:i]) for i in range(procs)]
    return list(zip(starts, sizes, strict=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steady", type=float, default=20.0)
    parser.add_argument("--admit-rate", type=float, default=200.0)
    parser.add_argument("--load-procs", type=int, default=1)
    args = parser.parse_args()
    trio.run(main, args.agents, args.steady, args.admit_rate, args.load_procs)
