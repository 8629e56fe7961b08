"""Agents and a joined bastion as witnesses of labd's audit log: each keeps the newest signed
audit checkpoint it was given, outside labd's reach, so ``labctl audit verify --checkpoint
FILE`` can later show entries cut off the log's tail even if labd's own checkpoint file went
with them.

Every ``audit_witness_interval`` seconds (0 disables; the first time at a random point of the
first interval) the daemon fetches ``GET /api/audit/witness`` over its mTLS identity and stores
the answer in ``audit-checkpoint.json`` (0600) beside its credentials, unless its checkpoint is
older than the one kept; a checkpoint that goes backwards is logged as a warning (the log may
have been truncated) and the kept one stays.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from lab.errors import LabError

log = logging.getLogger(__name__)

WITNESS_FILE = "audit-checkpoint.json"


def kept_seq(state_dir: Path) -> int | None:
    """The ``seq`` of the checkpoint kept in ``state_dir``, or None."""
    try:
        data = json.loads((state_dir / WITNESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cp = data.get("checkpoint") if isinstance(data, dict) else None
    seq = cp.get("seq") if isinstance(cp, dict) else None
    return seq if isinstance(seq, int) else None


def keep(state_dir: Path, answer: Any) -> bool:
    """Store labd's answer if its checkpoint is at least as new as the kept one (atomic, 0600);
    True when stored. Blocking: call from a thread."""
    cp = answer.get("checkpoint") if isinstance(answer, dict) else None
    seq = cp.get("seq") if isinstance(cp, dict) else None
    if not isinstance(seq, int):
        return False
    held = kept_seq(state_dir)
    if held is not None and seq < held:
        log.warning(
            "labd's audit checkpoint went back from #%d to #%d: entries may have been cut off "
            "its audit log; keeping #%d (labctl audit verify --checkpoint %s)",
            held,
            seq,
            held,
            state_dir / WITNESS_FILE,
        )
        return False
    path = state_dir / WITNESS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(answer, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return True


async def run_witness(
    interval: float,
    directory: Path,
    fetch: Callable[[], Awaitable[Any]],
    *,
    rng: random.Random,
    stored: Callable[[], None] | None = None,
) -> None:
    """Until cancelled: every ``interval`` seconds (±10 %, the first time at a random point of
    the first interval) ``fetch`` labd's answer and :func:`keep` it in ``directory``; failures
    are logged and tried again at the next turn. ``stored`` is called after each kept one."""
    await trio.sleep(interval * rng.uniform(0.0, 1.0))
    while True:
        try:
            kept = await trio.to_thread.run_sync(keep, directory, await fetch())
            if kept and stored is not None:
                stored()
        except LabError as exc:
            log.warning("could not fetch labd's audit checkpoint: %s", exc.message)
        except OSError as exc:
            log.warning("could not keep labd's audit checkpoint: %s", exc)
        await trio.sleep(interval * rng.uniform(0.9, 1.1))
