"""Audited requests per second through labd, with the MAC-chained audit log on SQLite vs the
same route with the audit log switched off (``audit_enabled=False``, a benchmark-only switch).

Run: ``python bench/audit.py [--seconds S] [--clients N]``. Both labds run in this process on
loopback with real mTLS, one after the other, each with a fresh data dir; ``clients`` keep-alive
connections call ``GET /api/auth/whoami`` as fast as they can for ``seconds``. Prints one JSON
line ``{"bench": "labd_audited_requests", "value": <req/s with audit>, "unit": "req/s",
"baseline": <req/s without>, "ratio": value / baseline}`` and checks afterwards that every
audited request left an entry and the chain verifies.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import trio

from lab import pki
from lab.labd.audit.keys import audit_keys
from lab.labd.config import LabdConfig
from lab.labd.server import serve_labd
from lab.store import open_store
from lab.store.auditchain import verify_chain

PATH = "/api/auth/whoami"


async def run(data: Path, *, audit: bool, seconds: float, clients: int) -> tuple[float, int]:
    """Requests per second and the number of answered requests."""
    config = LabdConfig(
        host="127.0.0.1",
        port=0,
        data_dir=str(data),
        enroll_rate=0,
        rate_global=0,
        rate_tokens=0,
        audit_enabled=audit,
        log_level="warning",
    )
    shutdown = trio.Event()
    done = 0
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(partial(serve_labd, config, shutdown=shutdown))
        url = f"https://{host}:{port}"
        ca = (data / "ca.pem").read_bytes()
        key = pki.generate_key()
        token = (data / "bootstrap-token").read_text().strip()
        async with httpx.AsyncClient(base_url=url, verify=pki.client_ssl_context(ca)) as http:
            resp = await http.post(
                "/api/auth/user-enroll",
                json={"token": token, "csr": pki.make_csr(key, "x").decode(), "username": "b"},
            )
            resp.raise_for_status()
        ctx = pki.client_ssl_context(
            ca, cert_pem=resp.json()["certificate"].encode(), key_pem=key, alpn=["http/1.1"]
        )
        deadline = 0.0

        async def client() -> None:
            nonlocal done
            async with httpx.AsyncClient(base_url=url, verify=ctx, timeout=30) as http:
                (await http.get(PATH)).raise_for_status()  # connect before the clock starts
                await started.wait()
                while time.perf_counter() < deadline:
                    (await http.get(PATH)).raise_for_status()
                    done += 1

        started = trio.Event()
        async with trio.open_nursery() as workers:
            for _ in range(clients):
                workers.start_soon(client)
            await trio.sleep(0.5)  # let every client connect and warm up
            begin = time.perf_counter()
            deadline = begin + seconds
            started.set()
        elapsed = time.perf_counter() - begin
        shutdown.set()
    return done / elapsed, done


async def check_log(data: Path, answered: int) -> None:
    keys = audit_keys(pki.resolve_ca_passphrase(data))
    async with open_store(f"sqlite:///{data / 'labd.db'}") as store:
        entries = await store.audit.list(limit=10_000)
        after = entries[-1].seq if entries else 0
        while True:
            page = await store.audit.list(after_seq=after, limit=10_000)
            if not page:
                break
            entries += page
            after = page[-1].seq
    whoami = sum(1 for e in entries if e.action == "auth:whoami")
    assert whoami >= answered, f"{answered} answered requests but {whoami} audit entries"
    assert verify_chain(entries, key=keys.chain) is None, "the audit chain does not verify"


async def main(seconds: float, clients: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        root = Path(tmp)
        baseline, _ = await run(root / "off", audit=False, seconds=seconds, clients=clients)
        value, answered = await run(root / "on", audit=True, seconds=seconds, clients=clients)
        await check_log(root / "on", answered)
    print(
        json.dumps(
            {
                "bench": "labd_audited_requests",
                "value": round(value, 1),
                "unit": "req/s",
                "baseline": round(baseline, 1),
                "ratio": round(value / baseline, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    trio.run(main, args.seconds, args.clients)
