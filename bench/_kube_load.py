"""Load process for bench/kubeproxy.py: GET one URL as fast as CONCURRENCY clients can.

Run: ``python bench/_kube_load.py URL CA CERT KEY SECONDS CONCURRENCY [TOKEN]``. Prints one
JSON line ``{"requests": N, "errors": E, "seconds": S, "statuses": {...}}``. CERT and KEY may
be ``-`` (then TOKEN is sent as a bearer token).
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import trio


async def main(argv: list[str]) -> None:
    url, ca, cert, key, seconds, concurrency = argv[:6]
    token = argv[6] if len(argv) > 6 else None
    ctx = ssl.create_default_context(cafile=ca)
    if cert != "-":
        ctx.load_cert_chain(cert, key)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + float(seconds)
    started = time.monotonic()

    async def worker() -> None:
        async with httpx.AsyncClient(verify=ctx, timeout=30, headers=headers) as http:
            while time.monotonic() < deadline:
                try:
                    resp = await http.get(url)
                    statuses[str(resp.status_code)] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(int(concurrency)):
            nursery.start_soon(worker)
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    errors = total - statuses.get("200", 0)
    print(
        json.dumps({"requests": total, "errors": errors, "seconds": elapsed, "statuses": statuses})
    )


if __name__ == "__main__":
    assert Path(sys.argv[2]).is_file()
    trio.run(main, sys.argv[1:])
