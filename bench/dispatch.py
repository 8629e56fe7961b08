"""Bench the bastion: /dispatch throughput and p99 at 50 concurrent clients against a static
route of the same server (/healthz), and a boot storm of 200 machines walking
discover -> install -> progress -> installed. Prints JSON lines; asserts nothing.

    .venv/bin/python bench/dispatch.py [--requests 4000] [--machines 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from lab.bastion.config import BastionConfig
from lab.bastion.server import serve_bastion

CONCURRENCY = 50


def emit(bench: str, value: float, unit: str, baseline: float | None = None) -> None:
    ratio = None if not baseline else round(value / baseline, 3)
    print(
        json.dumps(
            {
                "bench": bench,
                "value": round(value, 3),
                "unit": unit,
                "baseline": None if baseline is None else round(baseline, 3),
                "ratio": ratio,
            }
        ),
        flush=True,
    )


async def load(
    client: httpx.AsyncClient, path: str, params: list[dict[str, str]], n: int
) -> tuple[float, float]:
    """(requests per second, p99 latency in ms) for ``n`` GETs at CONCURRENCY."""
    latencies: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            t0 = time.perf_counter()
            r = await client.get(path, params=params[i % len(params)])
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker)
    wall = time.perf_counter() - start
    latencies.sort()
    return n / wall, latencies[int(len(latencies) * 0.99) - 1] * 1000


def mac(i: int) -> str:
    return f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


async def storm(client: httpx.AsyncClient, admin: dict[str, str], n: int) -> float:
    inventory: dict[str, Any] = {
        "firmware": "uefi",
        "memory_bytes": 2**33,
        "disks": [{"name": "/dev/sda", "size_bytes": 2**36}],
    }
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def machine(i: int) -> None:
        m = mac(i)
        async with limiter:
            script = (await client.get("/dispatch", params={"mac": m})).text
            disc = script.split("token=")[1].split()[0]
            r = await client.post(
                "/api/discover",
                json={"mac": m, **inventory},
                headers={"Authorization": f"Bearer {disc}"},
            )
            r.raise_for_status()
            r = await client.post(
                "/api/install",
                headers=admin,
                json={"mac": m, "hostname": f"n{i}", "role": "worker"},
            )
            r.raise_for_status()
            script = (await client.get("/dispatch", params={"mac": m})).text
            cb = script.split("token=")[1].split()[0]
            auth = {"Authorization": f"Bearer {cb}"}
            (
                await client.get("/kickstart/install.ks", params={"mac": m, "token": cb})
            ).raise_for_status()
            for phase, pct in [("pre", 0), ("partition", 0), ("packages", 50), ("post", 100)]:
                r = await client.post(
                    "/api/progress", headers=auth, json={"mac": m, "phase": phase, "percent": pct}
                )
                r.raise_for_status()
            assert r.json()["state"] == "installed"
            script = (await client.get("/dispatch", params={"mac": m})).text
            assert "install.ks" not in script

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(machine, i)
    return time.perf_counter() - start


async def main(requests: int, machines: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = BastionConfig(
            host="127.0.0.1", port=0, data_dir=tmp, repo="http://mirror.test/fedora/42/os"
        )
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                lambda task_status: serve_bastion(
                    config, shutdown_event=shutdown, task_status=task_status
                )
            )
            token = (Path(tmp) / "admin-token").read_text().strip()
            admin = {"Authorization": f"Bearer {token}"}
            limits = httpx.Limits(max_connections=CONCURRENCY)
            async with httpx.AsyncClient(
                base_url=f"http://{host}:{port}", limits=limits, timeout=60
            ) as client:
                macs = [{"mac": mac(i)} for i in range(500)]
                # Warm both routes and the connection pool; then alternate the two routes
                # and keep each one's best run, so ordering effects do not pick the winner.
                await load(client, "/healthz", [{}], requests // 2)
                await load(client, "/dispatch", macs, requests // 2)
                static = [await load(client, "/healthz", [{}], requests) for _ in range(2)]
                dyn = [await load(client, "/dispatch", macs, requests) for _ in range(2)]
                static_rps, static_p99 = max(s[0] for s in static), min(s[1] for s in static)
                rps, p99 = max(d[0] for d in dyn), min(d[1] for d in dyn)
                emit("dispatch_rps_c50", rps, "req/s", static_rps)
                emit("dispatch_p99_c50", p99, "ms", static_p99)
                wall = await storm(client, admin, machines)
                emit(f"boot_storm_{machines}_machines", wall, "s")
            shutdown.set()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--machines", type=int, default=200)
    args = parser.parse_args()
    trio.run(main, args.requests, args.machines)
