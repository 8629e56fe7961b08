"""Remote exec throughput: N MB of stdout through labd, byte-exact, and labd's memory.

Run: ``python bench/exec_throughput.py [--mb 1000] [--mode processes|inprocess]``. The remote
command is ``head -c N /dev/zero``; the client (this process) hashes what it receives and
compares it with the hash of N zero bytes.

- ``--mode processes`` (default): labd and one lab-agent are separate processes, as deployed,
  so each hop has its own interpreter and CPU;
- ``--mode inprocess``: labd, the agent and the client share this process (one CPU, the
  figure before the process mode existed).

Prints:

- ``exec_throughput[_inprocess]``: MB/s (10^6 bytes); baseline: the same bytes through
  ``ssh -p PORT 127.0.0.1 head -c N /dev/zero`` against a private sshd (bench/_sshd.py),
  hashed the same way, or null without openssh-server;
- ``exec_throughput_labd_rss_growth``: growth of labd's peak RSS (VmHWM) during the transfer,
  in MB (processes mode), which the credit windows bound whatever the size;
- ``exec_throughput_rss_growth_inprocess``: the same for the shared process (inprocess mode);
- ``exec_throughput_cpu_labd`` / ``_agent`` / ``_client`` (processes mode): CPU milliseconds
  (user + system) per MB transferred of labd, of the lab-agent and of the client (this
  process), steadier than the rate on a shared machine (a loaded CPU slows the transfer, not
  the work per byte).
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

from _procs import proc_cpu_seconds, proc_rss_mb, process_fleet, reset_peak_rss
from _sshd import private_sshd
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


async def through_exec(labd: object, admin: object, n: int) -> tuple[float, str, int]:
    """(seconds, sha256, exit code) of one ``head -c n /dev/zero`` through labd."""
    got = hashlib.sha256()
    size = 0

    async def sink(_: object, channel: Channel, payload: bytes) -> None:
        nonlocal size
        assert channel is Channel.STDOUT
        got.update(payload)
        size += len(payload)

    t0 = time.perf_counter()
    session = await exec_once(labd, admin, ["n1"], ["head", "-c", str(n), "/dev/zero"], sink=sink)
    elapsed = time.perf_counter() - t0
    (state,) = session.streams.values()
    assert state.exit is not None, state
    assert size == n, f"received {size} of {n} bytes"
    return elapsed, got.hexdigest(), state.exit.code or 0


async def through_ssh(n: int) -> float | None:
    """MB/s of the same bytes through a private sshd, hashed like the exec output."""
    with tempfile.TemporaryDirectory() as d:
        async with private_sshd(Path(d)) as ssh:
            if ssh is None:
                return None
            got = hashlib.sha256()
            import subprocess

            t0 = time.perf_counter()
            proc = await trio.lowlevel.open_process(
                [*ssh, "head", "-c", str(n), "/dev/zero"], stdout=subprocess.PIPE
            )
            assert proc.stdout is not None
            size = 0
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some(1 << 20):
                    got.update(chunk)
                    size += len(chunk)
            assert await proc.wait() == 0 and size == n
            return n / (time.perf_counter() - t0) / 1e6


async def main(mb: int, mode: str) -> None:
    n = mb * 1_000_000
    expected = zero_digest(n)
    baseline = await through_ssh(n)
    baseline = round(baseline, 3) if baseline else None
    with tempfile.TemporaryDirectory() as tmpdir:
        if mode == "processes":
            async with process_fleet(Path(tmpdir), 1) as procs:
                reset_peak_rss(procs.labd.pid)
                rss0, _ = proc_rss_mb(procs.labd.pid)
                pids = {"labd": procs.labd.pid, "agent": procs.agents[0].pid}
                cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
                own0 = time.process_time()
                elapsed, digest, code = await through_exec(procs, procs.admin, n)
                cpu = {name: proc_cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
                cpu["client"] = time.process_time() - own0
                _, peak = proc_rss_mb(procs.labd.pid)
            growth_bench, suffix = "exec_throughput_labd_rss_growth", ""
        else:
            async with fleet(Path(tmpdir), 1) as (labd, admin, _home):
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                elapsed, digest, code = await through_exec(labd, admin, n)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            growth_bench, suffix = "exec_throughput_rss_growth_inprocess", "_inprocess"
            cpu: dict[str, float] = {}
    assert code == 0 and digest == expected, "output is not byte-exact"
    emit(f"exec_throughput{suffix}", n / elapsed / 1e6, "MB/s", baseline)
    emit(growth_bench, max(0.0, peak - rss0), "MB", None)
    for name, seconds in cpu.items():
        emit(f"exec_throughput_cpu_{name}", seconds * 1000 / (n / 1e6), "ms/MB", None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--mode", choices=("processes", "inprocess"), default="processes")
    args = parser.parse_args()
    trio.run(main, args.mb, args.mode)
