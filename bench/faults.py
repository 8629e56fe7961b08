"""Client faults in a loop next to five long-running sessions: how much does anything else feel?

Run: ``python bench/faults.py [--rounds 5] [--head 10] [--short 200] [--mb 200] [--stall 30]``.
labd and one lab-agent run as real processes (tests/faults/site.py), with three ``labctl
exec`` counters printing once a second and two ``labctl logs -f`` followers of an appended
file for the whole run (tests/faults/bystanders.py). Each round injects every fault of
tests/faults/inject.py once: ``labctl exec … | head -1`` (``--head`` times; 50 over the
default 5 rounds), the same for ``get audit``/``get servers -o json``/``logs -f``, ``kill -9``
of ``labctl exec -i`` and ``-t``, stdin fed to a command that never reads it, garbage and
foreign stream ids, a client that goes silent without a FIN, ``--short`` concurrent
``/bin/true`` execs; once, a labctl whose stdout nobody reads for ``--stall`` s while the remote
side writes ``--mb`` MB.

Prints (goal 0 for the first four):

- ``faults_sessions_disturbed``: bystander sessions that did not end with their exact output
  and exit code 0;
- ``faults_agent_reconnects``: agent sessions beyond the first;
- ``faults_orphans``: processes of the faults or the bystanders left on the agent at the end;
- ``faults_failed``: faults whose faulty client did not see what it should (their message on
  stderr);
- ``faults_labd_rss_growth``: growth of labd's RSS over the run, in MB (baseline: the 64 MB
  the issue allows).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.daemons import proc_rss_mb  # noqa: E402
from tests.faults import inject  # noqa: E402
from tests.faults.bystanders import TAG, bystanders  # noqa: E402
from tests.faults.site import Site, start_site, tagged_pids  # noqa: E402

PING_INTERVAL = 1.0
PING_TIMEOUT = 3.0
RSS_LIMIT_MB = 64.0
TAGS = (TAG, "head", "kill-i", "kill-t", "garbage", "short", "slow", "silent", "stdin", "probe")
# Bytes `seq 1 N` prints, to size the slow reader's output.
SEQ_BYTES_PER_LINE = 7.9


def emit(bench: str, value: float, unit: str, baseline: float | None) -> None:
    ratio = value / baseline if baseline else None
    print(
        json.dumps(
            {
                "bench": bench,
                "value": round(value, 3),
                "unit": unit,
                "baseline": baseline,
                "ratio": round(ratio, 3) if ratio is not None else None,
            }
        ),
        flush=True,
    )


async def run(site: Site, args: argparse.Namespace) -> dict[str, float]:
    labd = site.labd.proc.pid
    base_rss = proc_rss_mb(labd)[0]
    peak = base_rss
    failed = 0

    async def attempt(name: str, fault: Callable[[], Awaitable[object]]) -> None:
        nonlocal failed
        try:
            with trio.fail_after(300):
                await fault()
        except (AssertionError, trio.TooSlowError, OSError) as exc:
            failed += 1
            print(f"fault {name} failed: {exc!r}", file=sys.stderr, flush=True)
            traceback.print_exc(limit=3)

    async def sample(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal peak
        task_status.started()
        while True:
            peak = max(peak, proc_rss_mb(labd)[0])
            await trio.sleep(0.25)

    seq_last = int(args.mb * 1_000_000 / SEQ_BYTES_PER_LINE)
    async with bystanders(site, "bench", period=args.period) as crowd:
        async with trio.open_nursery() as nursery:
            await nursery.start(sample)
            for number in range(1, args.rounds + 1):
                print(f"round {number}/{args.rounds}", file=sys.stderr, flush=True)
                await attempt("head", lambda: inject.exec_into_head(site, args.head, 5))
                await attempt("other | head", lambda: inject.other_commands_into_head(site))
                await attempt("kill -9 -i", lambda: inject.kill_9_midway(site, "-i"))
                await attempt("kill -9 -t", lambda: inject.kill_9_midway(site, "-t"))
                await attempt("stdin unread", lambda: inject.stdin_nobody_reads(site))
                await attempt("garbage", lambda: inject.garbage_and_foreign_ids(site))
                await attempt("silent", lambda: inject.silent_client(site, PING_TIMEOUT))
                await attempt("short", lambda: inject.short_execs(site, args.short))
            await attempt("slow", lambda: inject.stalled_reader(site, seq_last, args.stall))
            nursery.cancel_scope.cancel()
        problems = await crowd.verdicts()
    for name, problem in problems.items():
        if problem:
            print(f"bystander {name}: {problem}", file=sys.stderr, flush=True)
    with trio.move_on_after(15):
        while any(tagged_pids(tag) for tag in TAGS):
            await trio.sleep(0.2)
    return {
        "disturbed": sum(1 for p in problems.values() if p),
        "reconnects": max(0, len(site.agent_sessions()) - 1),
        "orphans": sum(len(tagged_pids(tag)) for tag in TAGS),
        "failed": failed,
        "rss": peak - base_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every fault")
    parser.add_argument("--head", type=int, default=10, help="exec | head -1 runs per round")
    parser.add_argument("--short", type=int, default=200, help="concurrent /bin/true per round")
    parser.add_argument("--mb", type=float, default=200, help="MB the stalled reader gets")
    parser.add_argument("--stall", type=float, default=30, help="seconds it does not read")
    parser.add_argument("--period", type=float, default=1.0, help="bystander counter period")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = start_site(
            Path(tmp),
            LABD_CLIENT_PING_INTERVAL=str(PING_INTERVAL),
            LABD_CLIENT_PING_TIMEOUT=str(PING_TIMEOUT),
        )
        try:
            result = trio.run(run, site, args)
        finally:
            site.stop()
    emit("faults_sessions_disturbed", result["disturbed"], "sessions", None)
    emit("faults_agent_reconnects", result["reconnects"], "reconnects", None)
    emit("faults_orphans", result["orphans"], "processes", None)
    emit("faults_failed", result["failed"], "faults", None)
    emit("faults_labd_rss_growth", result["rss"], "MB", RSS_LIMIT_MB)


if __name__ == "__main__":
    main()
