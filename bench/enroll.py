"""Enrollment throughput and the price of mutual TLS, against labd in its own process.

Run: ``python bench/enroll.py [--enrollments N] [--clients C] [--requests R]``.

1. ``enroll_per_second``: N agent enrollments (``POST /api/auth/enroll``: CSR vetting, signing,
   token use, certificate, server and agent rows) through C keep-alive connections, CSRs made
   beforehand. Baseline: signing the same CSRs in this process without HTTP or database, so the
   ratio says how much of the ceiling set by signing the server reaches.
2. ``mtls_request_ms``: median wall time of one ``GET /healthz`` on a *new* connection with a
   client certificate, vs the same without one (plain server-authenticated TLS). Ratio > 1 is
   what the client certificate costs per connection.

Prints JSON lines ``{"bench", "value", "unit", "baseline", "ratio"}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._procs import labd_env, port_of, start_daemon  # noqa: E402
from tests.labd.harness import RunningLabd  # noqa: E402

from lab import pki  # noqa: E402
from lab.labd.config import LabdConfig  # noqa: E402


def emit(bench: str, value: float, unit: str, baseline: float | None) -> None:
    ratio = round(value / baseline, 3) if baseline else None
    line = {"bench": bench, "value": round(value, 3), "unit": unit, "baseline": baseline}
    print(json.dumps({**line, "ratio": ratio}), flush=True)


def signing_rate(csrs: list[bytes]) -> float:
    ca = pki.create_ca("bench CA")
    start = time.perf_counter()
    for i, csr in enumerate(csrs):
        pki.issue_agent_cert(ca, csr, f"n{i}")
    return len(csrs) / (time.perf_counter() - start)


async def enroll_all(labd: RunningLabd, token: str, csrs: list[bytes], clients: int) -> float:
    queue = list(enumerate(csrs))
    failures: list[str] = []

    async def worker() -> None:
        async with labd.client() as http:
            while queue:
                i, csr = queue.pop()
                body = {"token": token, "csr": csr.decode(), "hostname": f"node{i}", "facts": {}}
                resp = await http.post("/api/auth/enroll", json=body)
                if resp.status_code != 201:
                    failures.append(resp.text)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} enrollments failed, e.g. {failures[0]}")
    return len(csrs) / elapsed


async def new_connection_ms(labd: RunningLabd, creds: object | None, requests: int) -> float:
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        # A fresh client per request: the TLS handshake (and the client certificate) is paid
        # every time, which is what an agent reconnect or a CLI invocation pays.
        async with httpx.AsyncClient(
            base_url=labd.url,
            verify=labd.ssl_context(creds),  # type: ignore[arg-type]
        ) as http:
            resp = await http.get("/healthz")
        times.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 200
    return statistics.median(times)


async def main(args: argparse.Namespace) -> None:
    keys_csrs = [pki.make_csr(pki.generate_key(), "x") for _ in range(args.enrollments)]
    baseline = signing_rate(keys_csrs)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "labd"
        argv = [sys.executable, "-m", "lab.labd.main"]
        env = labd_env(data, LABD_LOG_LEVEL="warning")
        async with trio.open_nursery() as nursery:
            daemon, status = await start_daemon(nursery, "labd", argv, env, tmp)
            try:
                port = port_of(status)
                config = LabdConfig(host="127.0.0.1", port=port, data_dir=str(data))
                labd = RunningLabd(
                    config=config, host="127.0.0.1", port=port, shutdown=trio.Event()
                )
                admin = await labd.admin()
                token = await labd.create_token(
                    admin, "agent", reusable=True, max_uses=args.enrollments
                )
                rate = await enroll_all(labd, token, keys_csrs, args.clients)
                emit("enroll_per_second", rate, "enrollments/s", round(baseline, 1))
                plain = await new_connection_ms(labd, None, args.requests)
                mutual = await new_connection_ms(labd, admin, args.requests)
                emit("mtls_request_ms", mutual, "ms", round(plain, 3))
            finally:
                await daemon.stop()
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    trio.run(main, parser.parse_args())
