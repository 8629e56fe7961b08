"""The agent as a witness of labd's audit log: it keeps the newest signed audit checkpoint it
was given, outside labd's reach, so ``labctl audit verify --checkpoint FILE`` can later show
entries cut off the log's tail even if labd's own checkpoint file went with them.

Every ``audit_witness_interval`` seconds (agent.yaml; 0 disables; the first time at a random
point of the first interval) the agent fetches
``GET /api/audit/witness`` over its mTLS identity and stores the checkpoint in
``<state dir>/audit-checkpoint.json`` (0600) unless it is older than the one it holds; a
checkpoint that goes backwards is logged as a warning (the log may have been truncated) and the
kept one stays.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lab.errors import Unavailable

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


def keep(state_dir: Path, answer: dict[str, Any]) -> bool:
    """Store labd's answer if its checkpoint is at least as new as the kept one (atomic, 0600);
    True when stored. Blocking: call from a thread."""
    cp = answer.get("checkpoint")
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


async def fetch(state_dir: Path, server: str, *, request_timeout: float = 30.0) -> dict[str, Any]:
    """labd's newest checkpoint over the agent's mTLS identity; Unavailable on any failure."""
    from lab import pki
    from lab.agent.identity import ENROLL_HINT
    from lab.cli.client import LabClient
    from lab.cli.credentials import load_credentials

    creds = load_credentials(state_dir, hint=ENROLL_HINT)
    ctx = pki.client_ssl_context(creds.ca_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
    async with LabClient(server, ssl_context=ctx, timeout=request_timeout) as client:
        answer = await client.get("/api/audit/witness")
    if not isinstance(answer, dict):
        raise Unavailable("labd's audit witness answer is not an object")
    return answer
