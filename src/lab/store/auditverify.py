"""The whole-log audit verdict, sans-IO: feed pages of entries, get the first break and its kind.

Inputs besides the entries: the audit key, the chain start record (:class:`ChainStart`, from the
settings) and the checkpoints (sequence, head, chain start) labd signed and kept outside the
database, plus any a witness kept. Signatures are checked by the caller (``lab.labd``); here a
checkpoint is trusted data.

What each kind means (docs/rbac-audit.md has the threat model):

- ``edited``: an entry's fields do not match its MAC (or its legacy hash).
- ``deleted``: a gap in ``seq`` or a broken ``prev_hash`` link: entries removed in the middle.
- ``rechained``: entries carry a hash anyone can compute (the legacy plain hash) where a MAC is
  required, or the legacy part no longer ends where the keyed chain says it did: someone
  rewrote the chain without the key.
- ``truncated``: the chain ends below a checkpoint's sequence: entries removed from the tail.
- ``wiped``: no entries at all although the chain start or a checkpoint says there were some.
- ``rewritten``: an entry or the start record differs from what a checkpoint recorded.
- ``start_missing``: the chain start record was deleted or reset.
- ``wrong_key``: the start record was not made with this audit key (wrong key or forged).
- ``bad_checkpoint``: a checkpoint whose signature does not hold (reported by the caller, which
  checks signatures).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from attrs import frozen

from lab.model import AuditEntry
from lab.store.auditchain import GENESIS, AuditKey, ChainStart, entry_hash, entry_mac

Kind = Literal[
    "ok",
    "edited",
    "deleted",
    "rechained",
    "truncated",
    "wiped",
    "rewritten",
    "start_missing",
    "wrong_key",
    "bad_checkpoint",
]
KINDS: tuple[Kind, ...] = get_args(Kind)


@frozen(kw_only=True)
class Checkpoint:
    """A signed statement "at ``time`` the chain that starts at ``chain_from`` had ``seq``
    entries and its last hash was ``head``"; ``source`` says where it was read (for messages)."""

    seq: int
    head: str
    chain_from: int
    key_id: str
    time: str
    source: str = ""


@frozen(kw_only=True)
class Verdict:
    kind: Kind
    checked: int
    """Entries verified before the break (all of them when ``ok``)."""
    last_seq: int
    """The last entry seen (the head of an intact chain)."""
    head: str
    broken_at: int | None = None
    reason: str = ""
    entry: AuditEntry | None = None
    legacy: int = 0
    """How many entries are legacy (plain hash, before the keyed chain started)."""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


class ChainVerifier:
    """Feed every entry in ``seq`` order with :meth:`feed`; stop at the first verdict it returns,
    else ask :meth:`finish`. ``start`` is the stored start record: ``None`` when it is missing,
    the string ``"pending"`` before any keyed entry (a database not yet started with a key)."""

    def __init__(
        self, key: AuditKey, start: ChainStart | str | None, checkpoints: Sequence[Checkpoint]
    ) -> None:
        self._key = key
        self._start = start
        self._checkpoints = sorted(checkpoints, key=lambda c: c.seq)
        self._at: dict[int, list[Checkpoint]] = {}
        for cp in self._checkpoints:
            self._at.setdefault(cp.seq, []).append(cp)
        self._prev_seq = 0
        self._prev_hash = GENESIS
        self._checked = 0
        self._legacy = 0
        self._verdict: Verdict | None = self._check_start()

    @property
    def _from_seq(self) -> int:
        # Pending: every entry is legacy.
        return self._start.from_seq if isinstance(self._start, ChainStart) else 2**63

    def _broken(
        self, kind: Kind, reason: str, entry: AuditEntry | None = None, at: int | None = None
    ) -> Verdict:
        return Verdict(
            kind=kind,
            checked=self._checked,
            last_seq=self._prev_seq,
            head=self._prev_hash,
            broken_at=at if at is not None else (entry.seq if entry is not None else None),
            reason=reason,
            entry=entry,
            legacy=self._legacy,
        )

    def _check_start(self) -> Verdict | None:
        start = self._start
        if start is None:
            return self._broken("start_missing", "the audit chain start record is missing")
        if not isinstance(start, ChainStart):
            if self._checkpoints:
                return self._broken(
                    "start_missing",
                    "the audit chain start record was reset although checkpoints exist",
                )
            return None
        if start.key_id != self._key.key_id:
            return self._broken(
                "wrong_key",
                f"the audit chain was started with key {start.key_id}, this labd holds key "
                f"{self._key.key_id} (set the same LABD_AUDIT_KEY on every replica)",
            )
        if not start.holds(self._key):
            return self._broken("wrong_key", "the audit chain start record was forged")
        for cp in self._checkpoints:
            if cp.chain_from != start.from_seq:
                return self._broken(
                    "rewritten",
                    f"the chain start record says the keyed chain starts at #{start.from_seq}, "
                    f"but the checkpoint {cp.source} recorded #{cp.chain_from}",
                )
        return None

    def feed(self, entries: Iterable[AuditEntry]) -> Verdict | None:
        """Check the next entries; the verdict of the first break, else None."""
        if self._verdict is not None:
            return self._verdict
        for entry in entries:
            broken = self._check(entry)
            if broken is not None:
                self._verdict = broken
                return broken
            self._prev_seq, self._prev_hash = entry.seq, entry.hash
            self._checked += 1
            if entry.seq < self._from_seq:
                self._legacy += 1
        return None

    def _check(self, entry: AuditEntry) -> Verdict | None:
        prev_seq, prev_hash = self._prev_seq, self._prev_hash
        if entry.seq > prev_seq + 1:
            gone = (
                f"entry #{prev_seq + 1} is missing"
                if entry.seq == prev_seq + 2
                else f"entries #{prev_seq + 1} to #{entry.seq - 1} are missing"
            )
            return self._broken("deleted", f"{gone} (deleted)", entry)
        if entry.seq != prev_seq + 1:
            return self._broken("edited", f"entry #{entry.seq} is out of order", entry)
        keyed = entry.seq >= self._from_seq
        if keyed and entry.seq == self._from_seq:
            start = self._start
            assert isinstance(start, ChainStart)
            if prev_hash != start.prev_hash:
                return self._broken(
                    "rechained",
                    f"the legacy entries before #{entry.seq} were rewritten: they no longer end "
                    "with the hash the keyed chain started from",
                    entry,
                )
        if entry.prev_hash != prev_hash:
            return self._broken(
                "deleted",
                f"entry #{entry.seq} does not link to entry #{prev_seq} (entries were removed or "
                "replaced)",
                entry,
            )
        plain = entry_hash(entry, prev_hash)
        if not keyed:
            if not hmac.compare_digest(entry.hash, plain):
                return self._broken(
                    "edited", f"entry #{entry.seq} does not match its hash (edited)", entry
                )
        elif not hmac.compare_digest(entry.hash, entry_mac(entry, prev_hash, self._key)):
            if hmac.compare_digest(entry.hash, plain):
                return self._broken(
                    "rechained",
                    f"entry #{entry.seq} carries a plain hash where the audit key's MAC is "
                    "required: the chain was re-computed without the key",
                    entry,
                )
            return self._broken(
                "edited", f"entry #{entry.seq} does not match its MAC (edited)", entry
            )
        for cp in self._at.get(entry.seq, ()):
            if not hmac.compare_digest(cp.head, entry.hash):
                return self._broken(
                    "rewritten",
                    f"entry #{entry.seq} is not the one the checkpoint {cp.source} of {cp.time} "
                    "recorded",
                    entry,
                )
        return None

    def finish(self) -> Verdict:
        """The verdict once every entry was fed."""
        if self._verdict is not None:
            return self._verdict
        last = self._prev_seq
        start = self._start
        expected = self._checkpoints[-1] if self._checkpoints else None
        floor = expected.seq if expected is not None else 0
        if isinstance(start, ChainStart):
            floor = max(floor, start.from_seq - 1)
        if last < floor:
            kind: Kind = "wiped" if last == 0 else "truncated"
            if expected is not None and expected.seq == floor:
                why = f"the checkpoint {expected.source} of {expected.time} recorded #{floor}"
            else:
                why = f"the keyed chain started after #{floor}"
            what = "the audit log is empty" if last == 0 else f"the audit log ends at #{last}"
            return self._broken(kind, f"{what} but {why}: entries were deleted", at=last + 1)
        return Verdict(
            kind="ok",
            checked=self._checked,
            last_seq=last,
            head=self._prev_hash,
            legacy=self._legacy,
        )


__all__ = ["KINDS", "ChainVerifier", "Checkpoint", "Kind", "Verdict"]
