"""Fan-out: `true` on N in-process lab-agents through one /ws/exec connection.

Run: ``python bench/fanout.py [--agents 200] [--parallel 32]`` (``--agents 1000`` for the
large case). Prints ``fanout_wall`` (seconds for every server to exit) and
``fanout_per_server`` (ms per server); no baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exec_latency import emit, exec_once, fleet


async def main(agents: int, parallel: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        async with fleet(Path(tmpdir), agents) as (labd, admin, _home):
            names = [f"n{i}" for i in range(1, agents + 1)]
            t0 = time.perf_counter()
            session = await exec_once(labd, admin, names, ["true"], parallel=parallel)
            elapsed = time.perf_counter() - t0
    failed = [s.server for s in session.streams.values() if s.exit is None or s.exit.code != 0]
    assert not failed, failed
    emit(f"fanout_wall_{agents}", elapsed, "s", None)
    emit(f"fanout_per_server_{agents}", elapsed / agents * 1000, "ms", None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=32)
    args = parser.parse_args()
    trio.run(main, args.agents, args.parallel)
