"""Remote exec throughput: 1 GB of stdout through labd, byte-exact, and labd's memory.

Run: ``python bench/exec_throughput.py [--mb 1000]``. labd and one lab-agent run in this
process; the remote command is `head -c N /dev/zero` and the received bytes are hashed and
compared with the hash of N zero bytes. Prints:

- ``exec_throughput``: MB/s (10^6 bytes), baseline `ssh 127.0.0.1 head -c N /dev/zero` when
  a private sshd can run (see exec_latency.py), else null;
- ``exec_throughput_rss_growth``: growth of this process's peak RSS during the transfer in MB
  (labd + agent + client share the process, so this bounds labd's growth from above).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exec_latency import emit, exec_once, fleet
from lab.proto import Channel


def zero_digest(n: int) -> str:
    h = hashlib.sha256()
    block = bytes(1 << 20)
    while n:
        step = min(n, len(block))
        h.update(block[:step])
        n -= step
    return h.hexdigest()


async def main(mb: int) -> None:
    n = mb * 1_000_000
    expected = zero_digest(n)
    with tempfile.TemporaryDirectory() as tmpdir:
        async with fleet(Path(tmpdir), 1) as (labd, admin, _home):
            got = hashlib.sha256()
            size = 0

            async def sink(_: object, channel: Channel, payload: bytes) -> None:
                nonlocal size
                got.update(payload)
                size += len(payload)

            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            session = await exec_once(
                labd, admin, ["n1"], ["head", "-c", str(n), "/dev/zero"], sink=sink
            )
            elapsed = time.perf_counter() - t0
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (state,) = session.streams.values()
    assert state.exit is not None and state.exit.code == 0, state
    assert size == n and got.hexdigest() == expected, "output is not byte-exact"
    emit("exec_throughput", n / elapsed / 1e6, "MB/s", None)
    emit("exec_throughput_rss_growth", (rss1 - rss0) / 1024, "MB", None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1000)
    trio.run(main, parser.parse_args().mb)
