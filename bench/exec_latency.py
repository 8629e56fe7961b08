"""Remote exec latency: `labctl exec server/x -- true` wall time, and the relay alone.

Run: ``python bench/exec_latency.py [--runs 20] [--relay-runs 200]``. Starts labd and one
lab-agent in this process (loopback, real TLS), then prints JSON lines:

- ``exec_latency_cli``: median wall time of a fresh `labctl exec server/n1 -- true` process
  (includes Python start-up and imports), baseline `ssh -p PORT 127.0.0.1 true` (no connection
  sharing) against a private sshd when openssh-server is installed, else null; the two run
  paired (labctl, ssh, labctl, ssh, ...) so a burst of load from elsewhere hits both;
- ``exec_cli_cpu``: the median CPU time (user + system) of those labctl processes, baseline
  the ssh client's of the same pairs;
- ``exec_latency_cli_vs_salt`` (with ``--salt-bin DIR``, Salt's bin directory: `nox -s bench
  -- --with-salt` installs Salt into its own virtualenv): the same labctl wall time against
  `salt minion1 cmd.run /bin/true` through a private master and minion (bench/_salt.py), run
  in the same rounds;
- ``exec_latency_relay_p50`` / ``_p99``: one exec of `true` over an open client connection
  (CLI session → labd relay → hub → agent → process → back), in milliseconds.

The fleet helpers here are reused by exec_throughput.py and fanout.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

from _salt import private_salt  # noqa: E402
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


def cli_env(labd: Labd, home: Path, src: Path | None = None) -> dict[str, str]:
    """labctl's environment: this labd, the admin's identity in ``home``; labctl from the
    source tree ``src`` (its ``src`` directory) when given.

    Without PYTHONDONTWRITEBYTECODE: labctl starts from compiled bytecode, as an installed
    labctl does (pip compiles at install), once the warm-up run wrote it; a checkout run with
    that variable set would recompile labctl's modules on every start (~45 ms of CPU here).
    """
    env = {
        **os.environ,
        "LABCTL_HOME": str(home),
        "LABCTL_CONFIG": str(home / "config.yaml"),
        "LABCTL_SERVER": labd.running.url,
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    return env


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


async def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall s, CPU s) of one child process run to its end (its own CPU only)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    await trio.run_process(argv, env=env, capture_stderr=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


async def main(
    runs: int, relay_runs: int, salt_bin: Path | None = None, baseline_src: Path | None = None
) -> None:
    print("# load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        (Path(tmpdir) / "sshd").mkdir()
        async with (
            fleet(Path(tmpdir), 1) as (labd, admin, home),
            private_sshd(Path(tmpdir) / "sshd") as ssh,
            private_salt(Path(tmpdir) / "salt", salt_bin) as salt,
        ):
            labctl = [sys.executable, "-m", "lab.cli.main", "exec", "server/n1", "--", "true"]
            env = cli_env(labd, home)
            await timed(labctl, env)  # warm caches (bytecode, page cache) for both
            if ssh is not None:
                await timed([*ssh, "true"])  # and known_hosts
            other = cli_env(labd, home, baseline_src) if baseline_src else None
            if other is not None:
                await timed(labctl, other)
            ours: list[tuple[float, float]] = []
            theirs: list[tuple[float, float]] = []
            before: list[tuple[float, float]] = []
            salts: list[float] = []
            for _ in range(runs):
                ours.append(await timed(labctl, env))
                if ssh is not None:
                    theirs.append(await timed([*ssh, "true"]))
                if salt is not None:
                    salts.append((await timed([*salt, "cmd.run", "/bin/true"]))[0])
                if other is not None:
                    before.append(await timed(labctl, other))
            wall = statistics.median(w for w, _ in ours) * 1000
            cpu = statistics.median(c for _, c in ours) * 1000
            ssh_wall = round(statistics.median(w for w, _ in theirs) * 1000, 3) if theirs else None
            ssh_cpu = round(statistics.median(c for _, c in theirs) * 1000, 3) if theirs else None
            emit("exec_latency_cli", wall, "ms", ssh_wall)
            emit("exec_cli_cpu", cpu, "ms", ssh_cpu)
            if salts:
                salt_wall = round(statistics.median(salts) * 1000, 3)
                emit("exec_latency_cli_vs_salt", wall, "ms", salt_wall)
            if before:
                old_wall = round(statistics.median(w for w, _ in before) * 1000, 3)
                old_cpu = round(statistics.median(c for _, c in before) * 1000, 3)
                emit("exec_latency_cli_vs_baseline_src", wall, "ms", old_wall)
                emit("exec_cli_cpu_vs_baseline_src", cpu, "ms", old_cpu)
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--relay-runs", type=int, default=200)
    parser.add_argument("--salt-bin", type=Path, default=None, help="Salt's bin directory")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="another source tree (e.g. an older commit's): its labctl runs in the same rounds",
    )
    args = parser.parse_args()
    trio.run(main, args.runs, args.relay_runs, args.salt_bin, args.baseline_src)
