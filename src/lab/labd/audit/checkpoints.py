"""Signed audit checkpoints: labd's statements of the chain's length and head, kept outside the
database so that deleting the tail (or everything) and re-chaining are detected.

A checkpoint is one JSON object ``{"v": 1, "seq", "head", "chain_from", "key_id", "time",
"sig"}``; ``sig`` is the Ed25519 signature (base64) of the canonical JSON of the other fields,
by the key derived from the audit key (:mod:`lab.labd.audit.keys`). labd appends one to
``<data dir>/audit-checkpoints.jsonl`` (mode 0600, one object per line, fsynced) every
``audit_checkpoint_every`` entries and at shutdown. ``GET /api/audit/checkpoint`` hands out the
latest with the public key, so an operator (or an agent) can keep it as a witness and give it
back to ``labctl audit verify --checkpoint FILE``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from lab import pki
from lab.errors import Invalid
from lab.labd.audit.keys import AuditKeys
from lab.store import (
    ChainStart,
    ChainVerifier,
    Checkpoint,
    Store,
    Verdict,
    canonical_time,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "audit-checkpoints.jsonl"
POLL_SECONDS = 1.0
"""How often the checkpointer looks at the chain's head."""
VERIFY_PAGE = 5000
_FIELDS = ("v", "seq", "head", "chain_from", "key_id", "time")


def _signed_bytes(data: dict[str, Any]) -> bytes:
    body = {k: data[k] for k in _FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def make_checkpoint(
    keys: AuditKeys, *, seq: int, head: str, chain_from: int, at: datetime
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": 1,
        "seq": seq,
        "head": head,
        "chain_from": chain_from,
        "key_id": keys.key_id,
        "time": canonical_time(at),
    }
    data["sig"] = base64.b64encode(keys.signer.sign(_signed_bytes(data))).decode()
    return data


def parse_checkpoint(data: Any, public_key: bytes, *, source: str) -> Checkpoint:
    """A checkpoint whose signature holds under ``public_key``; ``Invalid`` naming what is
    wrong otherwise (not an object, missing fields, bad signature)."""
    if not isinstance(data, dict):
        raise Invalid(f"checkpoint {source} is not a JSON object")
    try:
        fields = {k: data[k] for k in _FIELDS}
        sig = base64.b64decode(str(data["sig"]), validate=True)
        cp = Checkpoint(
            seq=int(fields["seq"]),
            head=str(fields["head"]),
            chain_from=int(fields["chain_from"]),
            key_id=str(fields["key_id"]),
            time=str(fields["time"]),
            source=source,
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise Invalid(f"checkpoint {source} is malformed: {exc}") from exc
    if not pki.signature_holds(public_key, _signed_bytes(data), sig):
        raise Invalid(f"checkpoint {source} does not carry labd's signature (forged or edited)")
    return cp


class CheckpointLog:
    """The append-only checkpoint file in the data dir."""

    def __init__(self, data_dir: Path, keys: AuditKeys) -> None:
        self.path = data_dir / CHECKPOINT_FILE
        self.keys = keys

    def append(self, checkpoint: dict[str, Any]) -> None:
        """Append one line and fsync it (blocking: call from a thread)."""
        line = json.dumps(checkpoint, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[list[Checkpoint], list[str]]:
        """Every checkpoint whose signature holds, and one message per line that does not."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [], []
        good: list[Checkpoint] = []
        bad: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            source = f"{self.path.name}:{number}"
            try:
                data = json.loads(line)
                good.append(parse_checkpoint(data, self.keys.signer.public_key, source=source))
            except json.JSONDecodeError:
                bad.append(f"checkpoint {source} is not JSON")
            except Invalid as exc:
                bad.append(exc.message)
        return good, bad

    def last(self) -> dict[str, Any] | None:
        """The newest line as written (for the API), or None."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                return data
        return None


class Checkpointer:
    """Writes a checkpoint every ``every`` entries (looking every ``POLL_SECONDS``) and at
    shutdown. ``every == 0`` writes only at shutdown."""

    def __init__(self, store: Store, checkpoints: CheckpointLog, *, every: int) -> None:
        self.store = store
        self.log = checkpoints
        self.every = every
        self._last_seq: int | None = None
        self._last_head = ""
        self.written = 0
        self._wrote = trio.Event()
        self.latest: dict[str, Any] | None = checkpoints.last()
        """The newest checkpoint in the file (what witnesses get)."""

    async def write(self) -> dict[str, Any] | None:
        """Checkpoint the current head unless it is the last one written; the checkpoint."""
        seq, head = await self.store.audit.head()
        if seq == self._last_seq and head == self._last_head:
            return None
        start = await self.store.audit.chain_start()
        if not isinstance(start, ChainStart):
            log.error("audit chain start record missing: no checkpoint written")
            return None
        cp = make_checkpoint(
            self.log.keys, seq=seq, head=head, chain_from=start.from_seq, at=datetime.now(UTC)
        )
        await trio.to_thread.run_sync(self.log.append, cp)
        self.latest = cp
        self._last_seq, self._last_head = seq, head
        self.written += 1
        self._wrote.set()
        self._wrote = trio.Event()
        return cp

    async def wait_written(self, count: int) -> None:
        """Wait until this labd wrote ``count`` checkpoints since it started."""
        while self.written < count:
            await self._wrote.wait()

    async def run(
        self, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Until ``shutdown``: checkpoint whenever ``every`` entries were added since the last.
        (The shutdown checkpoint is the caller's, once every request has been answered.)"""
        last = self.latest
        if last is not None and isinstance(last.get("seq"), int):
            self._last_seq, self._last_head = last["seq"], str(last.get("head", ""))
        task_status.started()
        if self.every <= 0:
            return
        while not shutdown.is_set():
            with trio.move_on_after(POLL_SECONDS):
                await shutdown.wait()
            try:
                seq = await self.store.audit.last_seq()
                if seq - (self._last_seq or 0) >= self.every or seq < (self._last_seq or 0):
                    await self.write()
            except Exception:  # a database hiccup: try again at the next poll
                log.exception("could not write an audit checkpoint")


async def verify_log(
    store: Store, keys: AuditKeys, checkpoints: CheckpointLog, witnesses: list[Checkpoint]
) -> tuple[Verdict, int]:
    """Walk the whole chain against the start record, the checkpoint file and ``witnesses``;
    returns the verdict and how many checkpoints it was checked against."""
    good, bad = await trio.to_thread.run_sync(checkpoints.read)
    everything = [*good, *witnesses]
    start = await store.audit.chain_start()
    if bad:
        return (
            Verdict(kind="bad_checkpoint", checked=0, last_seq=0, head="", reason=bad[0]),
            len(everything),
        )
    verifier = ChainVerifier(keys.chain, start, everything)
    after = 0
    while True:
        page = await store.audit.list(after_seq=after, limit=VERIFY_PAGE)
        if not page:
            break
        broken = verifier.feed(page)
        if broken is not None:
            return broken, len(everything)
        after = page[-1].seq
    return verifier.finish(), len(everything)
