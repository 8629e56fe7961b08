"""Audit append throughput: group commit vs one transaction per row, on a temp SQLite file;
and the cost of the keyed chain (HMAC-SHA256) against the old keyless hash.

Run: ``python bench/store.py``. Prints two JSON lines:
``{"bench": "store_audit_append", "value": <rows/s>, "unit": "rows/s", "baseline": <rows/s>,
"ratio": value / baseline}`` where the baseline is the same writer limited to one row per
batch (one thread hop and one COMMIT per row); rows are MAC'd under an audit key as labd does.
``{"bench": "audit_chain_mac", "value": <entries/s>, "unit": "entries/s", "baseline":
<entries/s>, "ratio": ...}``: chaining entries in Python with the keyed MAC (value) vs the legacy
plain SHA-256 (baseline), no database.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import trio

from lab.model import AuditEntry
from lab.store.auditchain import AuditKey, chain, chain_keyed, verify_chain
from lab.store.sqlite import open_sqlite

KEY = AuditKey(b"labctl benchmark audit key 32 by")


def _entry(i: int, j: int) -> AuditEntry:
    return AuditEntry(
        user=f"user{i}",
        session=f"{i:032x}",
        action="exec:start",
        resource=f"server/node{j % 50}",
        source="127.0.0.1",
        duration_ms=1.5,
        details={"argv": ["uname", "-a"], "n": j},
    )


def chain_rate(entries: int, *, keyed: bool) -> float:
    """Entries per second chained in Python (keyed MAC or legacy plain hash)."""
    items = [_entry(0, j) for j in range(entries)]
    prev = ""
    started = time.perf_counter()
    for seq, item in enumerate(items, start=1):
        done = chain_keyed(item, seq, prev, KEY) if keyed else chain(item, seq, prev)
        prev = done.hash
    return entries / (time.perf_counter() - started)


async def append_rows(path: Path, *, rows: int, producers: int, max_batch: int) -> float:
    """Rows per second for ``rows`` appends spread over ``producers`` concurrent tasks."""
    async with open_sqlite(f"sqlite:///{path}", max_batch=max_batch, audit_key=KEY) as store:
        await store.audit.start_chain()
        per_producer = rows // producers

        async def producer(i: int) -> None:
            for j in range(per_producer):
                await store.audit.append(_entry(i, j))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(producers):
                nursery.start_soon(producer, i)
        elapsed = time.perf_counter() - started
        entries = await store.audit.list(limit=10_000)
        if verify_chain(entries, key=KEY) is not None:
            raise SystemExit("audit chain broken during the benchmark")
    return per_producer * producers / elapsed


async def main(rows: int, baseline_rows: int, producers: int, chain_entries: int) -> None:
    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
        value = await append_rows(
            Path(tmp) / "group.db", rows=rows, producers=producers, max_batch=1000
        )
        baseline = await append_rows(
            Path(tmp) / "single.db", rows=baseline_rows, producers=producers, max_batch=1
        )
    print(
        json.dumps(
            {
                "bench": "store_audit_append",
                "value": round(value, 1),
                "unit": "rows/s",
                "baseline": round(baseline, 1),
                "ratio": round(value / baseline, 2),
            }
        )
    )
    keyed = chain_rate(chain_entries, keyed=True)
    plain = chain_rate(chain_entries, keyed=False)
    print(
        json.dumps(
            {
                "bench": "audit_chain_mac",
                "value": round(keyed, 1),
                "unit": "entries/s",
                "baseline": round(plain, 1),
                "ratio": round(keyed / plain, 2),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    parser.add_argument("--producers", type=int, default=100)
    parser.add_argument("--chain-entries", type=int, default=50_000)
    args = parser.parse_args()
    trio.run(main, args.rows, args.baseline_rows, args.producers, args.chain_entries)
