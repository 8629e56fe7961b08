"""Audit append throughput: group commit vs one transaction per row, on a temp SQLite file.

Run: ``python bench/store.py``. Prints one JSON line:
``{"bench": "store_audit_append", "value": <rows/s>, "unit": "rows/s", "baseline": <rows/s>,
"ratio": value / baseline}`` where the baseline is the same writer limited to one row per
batch (one thread hop and one COMMIT per row).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import trio

from lab.model import AuditEntry
from lab.store.auditchain import verify_chain
from lab.store.sqlite import open_sqlite


async def append_rows(path: Path, *, rows: int, producers: int, max_batch: int) -> float:
    """Rows per second for ``rows`` appends spread over ``producers`` concurrent tasks."""
    async with open_sqlite(f"sqlite:///{path}", max_batch=max_batch) as store:
        per_producer = rows // producers

        async def producer(i: int) -> None:
            for j in range(per_producer):
                await store.audit.append(
                    AuditEntry(
                        user=f"user{i}",
                        session=f"{i:032x}",
                        action="exec:start",
                        resource=f"server/node{j % 50}",
                        source="127.0.0.1",
                        duration_ms=1.5,
                        details={"argv": ["uname", "-a"], "n": j},
                    )
                )

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(producers):
                nursery.start_soon(producer, i)
        elapsed = time.perf_counter() - started
        entries = await store.audit.list(limit=10_000)
        if verify_chain(entries) is not None:
            raise SystemExit("audit chain broken during the benchmark")
    return per_producer * producers / elapsed


async def main(rows: int, baseline_rows: int, producers: int) -> None:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    parser.add_argument("--producers", type=int, default=100)
    args = parser.parse_args()
    trio.run(main, args.rows, args.baseline_rows, args.producers)
