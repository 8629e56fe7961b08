"""The suite runs in pytest-xdist workers (noxfile), which refuse to start unless every worker
collects the same test ids: an id shown from a set, a random value or an object's address
differs between processes. Two collections with different hash seeds must agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _collect(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_two_processes_collect_the_same_ids() -> None:
    first, second = _collect("1"), _collect("2")
    assert len(first) > 1000
    differ = sorted(set(first) ^ set(second))
    assert not differ, "ids that differ between processes:\n" + "\n".join(differ[:20])
