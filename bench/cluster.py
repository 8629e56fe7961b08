"""Cluster mode: exec latency through a forwarding replica, and failover time.

Run: ``python bench/cluster.py [--runs 50]``. Starts a throwaway PostgreSQL 15, two labd
replicas (A, B) and one lab-agent held by B, all real processes on loopback, then prints JSON
lines:

- ``cluster_exec_forwarded_p50``: one exec of ``true`` (new client connection each time) sent
  to A, which forwards it to B over mTLS; baseline: the same exec sent to B directly, the
  two alternated run by run;
- ``cluster_failover_seconds``: seconds from ``kill -9`` of B until A reports the agent online
  with A as its holder (no baseline).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.rig import ClusterRig  # noqa: E402
from tests.store.pg_server import create_database, database_url, running_postgres  # noqa: E402

from lab.client.wsclient import StreamSession, connect, identity_context  # noqa: E402


def emit(bench: str, value: float, unit: str, baseline: float | None) -> None:
    ratio = round(value / baseline, 3) if baseline else None
    line = {"bench": bench, "value": round(value, 3), "unit": unit, "baseline": baseline}
    print(json.dumps({**line, "ratio": ratio}), flush=True)


async def exec_ms(url: str, home: Path, server: str) -> float:
    async def discard(*_: object) -> None:
        pass

    started = time.perf_counter()
    async with connect(url, "/ws/exec", identity_context(home)) as ws:
        session = StreamSession(ws)
        await session.open("exec", {"targets": [server], "start": {"argv": ["true"]}})
        await session.run(discard)
    return (time.perf_counter() - started) * 1000


async def paired_latencies(
    forwarding: str, holder: str, home: Path, runs: int
) -> tuple[list[float], list[float]]:
    """(forwarded, direct) ms, alternated run by run so load from elsewhere hits both."""
    await exec_ms(forwarding, home, "n1")  # warm up (first forward also opens the pool, etc.)
    await exec_ms(holder, home, "n1")
    forwarded: list[float] = []
    direct: list[float] = []
    for _ in range(runs):
        forwarded.append(await exec_ms(forwarding, home, "n1"))
        direct.append(await exec_ms(holder, home, "n1"))
    return forwarded, direct


def failover_seconds(rig: ClusterRig) -> float:
    """kill -9 B; poll A (50 ms) until n1 is online there."""
    from lab import pki
    from lab.client.credentials import load_credentials

    creds = load_credentials(rig.home, hint="")
    ctx = pki.client_ssl_context(creds.ca_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
    with httpx.Client(base_url=rig.urls["a"], verify=ctx, timeout=10) as http:
        started = time.monotonic()
        rig.kill("labd-b")
        while time.monotonic() - started < 60:
            item = http.get("/api/servers/n1").json()
            if item.get("status") == "online" and item.get("replica") == "a":
                return time.monotonic() - started
            time.sleep(0.05)
    raise RuntimeError("n1 did not come back on A within 60 s")


def main(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="lab-bench-cluster-"))
    try:
        with running_postgres() as pg:
            create_database(pg.url(), "labd")
            rig = ClusterRig(work, work, database_url(pg.url(), "labd"))
            try:
                rig.start_replica("a")
                rig.start_replica("b")
                rig.login("a")
                rig.start_agent("n1", rig.agent_token(), enroll_on="b", servers=["b", "a"])
                rig.wait_held("n1", "b")
                forwarded, direct = trio.run(
                    paired_latencies, rig.urls["a"], rig.urls["b"], rig.home, runs
                )
                emit(
                    "cluster_exec_forwarded_p50",
                    statistics.median(forwarded),
                    "ms",
                    round(statistics.median(direct), 3),
                )
                emit("cluster_failover_seconds", failover_seconds(rig), "s", None)
            finally:
                rig.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    main(parser.parse_args().runs)
