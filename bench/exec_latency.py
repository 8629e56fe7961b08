"""Remote exec latency: `labctl exec server/x -- true` wall time, and the relay alone.

Run: ``python bench/exec_latency.py [--runs 20] [--relay-runs 200]``. Starts labd and one
lab-agent in this process (loopback, real TLS), then prints JSON lines:

- ``exec_latency_cli``: median wall time of a `labctl exec` subprocess (includes Python
  start-up and imports), baseline `ssh -p PORT 127.0.0.1 true` against a private sshd when
  openssh-server is installed, else null;
- ``exec_latency_relay_p50`` / ``_p99``: one exec of `true` over an open client connection
  (CLI session → labd relay → hub → agent → process → back), in milliseconds.

The fleet helpers here are reused by exec_throughput.py and fanout.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.hub.hubtools import Labd, enroll_state, labd_with_hub  # noqa: E402
from tests.labd.harness import Credentials  # noqa: E402

from _sshd import private_sshd  # noqa: E402
from lab.agent.daemon import run_agent  # noqa: E402
from lab.client.credentials import Credentials as CliCredentials  # noqa: E402
from lab.client.credentials import save_credentials  # noqa: E402
from lab.client.wsclient import StreamSession, connect  # noqa: E402


def emit(bench: str, value: float, unit: str, baseline: float | None) -> None:
    ratio = value / baseline if baseline else None
    print(
        json.dumps(
            {
                "bench": bench,
                "value": round(value, 3),
                "unit": unit,
                "baseline": baseline,
                "ratio": round(ratio, 3) if ratio else None,
            }
        ),
        flush=True,
    )


@asynccontextmanager
async def fleet(tmp: Path, agents: int) -> AsyncIterator[tuple[Labd, Credentials, Path]]:
    """labd + ``agents`` in-process lab-agents named n1..nN; yields (labd, admin, labctl home)."""
    async with labd_with_hub(tmp, agent_admit_rate=100_000.0) as labd:
        admin = await labd.running.admin()
        home = tmp / "home"
        save_credentials(
            home,
            CliCredentials(
                ca_pem=labd.running.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem
            ),
        )
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(1, agents + 1):
                settings = await enroll_state(labd.running, admin, f"n{i}", tmp / f"n{i}")
                agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
                await agent.wait_connected()
            try:
                yield labd, admin, home
            finally:
                shutdown.set()


def cli_env(labd: Labd, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LABCTL_HOME": str(home),
        "LABCTL_CONFIG": str(home / "config.yaml"),
        "LABCTL_SERVER": labd.running.url,
    }


async def exec_once(
    labd: Labd,
    admin: Credentials,
    targets: list[str],
    argv: list[str],
    sink: Any = None,
    parallel: int = 32,
) -> StreamSession:
    async def discard(*_: object) -> None:
        pass

    ctx = labd.running.ssl_context(admin, alpn=["http/1.1"])
    async with connect(labd.running.url, "/ws/exec", ctx) as ws:
        session = StreamSession(ws)
        await session.open(
            "exec", {"targets": targets, "parallel": parallel, "start": {"argv": argv}}
        )
        await session.run(sink or discard)
    return session


async def main(runs: int, relay_runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        async with fleet(Path(tmpdir), 1) as (labd, admin, home):
            walls = []
            for _ in range(runs):
                t0 = time.perf_counter()
                await trio.run_process(
                    [sys.executable, "-m", "lab.cli.main", "exec", "server/n1", "--", "true"],
                    env=cli_env(labd, home),
                )
                walls.append(time.perf_counter() - t0)
            baseline = await ssh_baseline(runs)
            emit("exec_latency_cli", statistics.median(walls) * 1000, "ms", baseline)
            ctx = labd.running.ssl_context(admin, alpn=["http/1.1"])
            samples = []
            for _ in range(relay_runs):
                t0 = time.perf_counter()
                async with connect(labd.running.url, "/ws/exec", ctx) as ws:
                    session = StreamSession(ws)
                    await session.open("exec", {"targets": ["n1"], "start": {"argv": ["true"]}})

                    async def discard(*_: object) -> None:
                        pass

                    await session.run(discard)
                samples.append((time.perf_counter() - t0) * 1000)
            samples.sort()
            emit("exec_latency_relay_p50", samples[len(samples) // 2], "ms", None)
            emit("exec_latency_relay_p99", samples[int(len(samples) * 0.99) - 1], "ms", None)


async def ssh_baseline(runs: int) -> float | None:
    """Median ms of `ssh -p PORT 127.0.0.1 true` against a private sshd, if one can run."""
    with tempfile.TemporaryDirectory() as d:
        async with private_sshd(Path(d)) as ssh:
            if ssh is None:
                return None
            await trio.run_process([*ssh, "true"], capture_stderr=True)  # known_hosts
            walls = []
            for _ in range(runs):
                t0 = time.perf_counter()
                await trio.run_process([*ssh, "true"], capture_stderr=True)
                walls.append(time.perf_counter() - t0)
            return round(statistics.median(walls) * 1000, 3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--relay-runs", type=int, default=200)
    args = parser.parse_args()
    trio.run(main, args.runs, args.relay_runs)
