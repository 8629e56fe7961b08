"""The audit chain, pure: no I/O, so labd and ``labctl audit verify`` share it.

Keyed chain (every entry labd writes): ``hash = HMAC-SHA256(audit key, "labctl-audit-v1" NUL
prev_hash canonical_json(fields without hash))``. Without the audit key nobody can compute a
valid ``hash``, so an edited, deleted or inserted row cannot be re-chained by someone who can
only write the database. The key is never stored in the database (see ``lab.labd.audit.keys``).

Legacy chain (rows written before the keyed chain started, see :class:`ChainStart`): ``hash =
sha256(prev_hash + canonical_json(...))``. The first keyed entry's MAC covers the last legacy
hash, so from that moment the legacy rows cannot be re-chained either.

The first entry has ``seq == 1`` and ``prev_hash == ""``. Canonical JSON sorts keys, has no
whitespace and writes times as UTC ISO-8601 with microseconds, so every backend reproduces the
same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from attrs import frozen

from lab.errors import ConfigError, Unavailable
from lab.model import AuditEntry

GENESIS = ""
_MAC_DOMAIN = b"labctl-audit-v1\x00"
_KEY_ID_LABEL = b"labctl audit key id v1"
_START_DOMAIN = b"labctl-audit-start-v1\x00"

START_SETTING = "audit_chain"
"""The settings key of the chain start record (JSON of :class:`ChainStart`)."""
START_PENDING = "pending"
"""Its value until the first labd holding an audit key starts the keyed chain (migration)."""


@frozen
class AuditKey:
    """The secret the chain is MAC'd with; ``key_id`` names it without revealing it."""

    secret: bytes = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.secret) < 32:
            raise ValueError("an audit key needs at least 32 bytes")

    @property
    def key_id(self) -> str:
        return hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def mac(self, *parts: bytes) -> str:
        m = hmac.new(self.secret, digestmod=hashlib.sha256)
        for part in parts:
            m.update(part)
        return m.hexdigest()

    def derive(self, label: bytes) -> bytes:
        """32 bytes for another purpose (the checkpoint signing key), independent of the MACs."""
        return hmac.new(self.secret, b"labctl-derive-v1\x00" + label, hashlib.sha256).digest()


def canonical_time(value: datetime) -> str:
    """The one text form of a time in the chain (and in SQLite columns)."""
    if value.tzinfo is None:
        raise ValueError("audit times must carry a timezone")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(entry: AuditEntry) -> str:
    fields: dict[str, Any] = {
        "seq": entry.seq,
        "time": canonical_time(entry.time),
        "user": entry.user,
        "session": entry.session,
        "action": entry.action,
        "resource": entry.resource,
        "result": entry.result,
        "duration_ms": float(entry.duration_ms),
        "source": entry.source,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(entry: AuditEntry, prev_hash: str) -> str:
    """The hash ``entry`` must carry when it follows an entry hashed ``prev_hash``.

    ``entry.prev_hash`` is part of the hashed fields, so callers set it to ``prev_hash`` first.
    """
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("utf-8"))
    digest.update(canonical_json(entry).encode("utf-8"))
    return digest.hexdigest()


def entry_mac(entry: AuditEntry, prev_hash: str, key: AuditKey) -> str:
    """The keyed ``hash`` ``entry`` must carry when it follows an entry hashed ``prev_hash``."""
    return key.mac(
        _MAC_DOMAIN, prev_hash.encode("utf-8"), b"\x00", canonical_json(entry).encode("utf-8")
    )


def chain_keyed(entry: AuditEntry, seq: int, prev_hash: str, key: AuditKey) -> AuditEntry:
    """``entry`` as labd stores it at ``seq`` after the entry hashed ``prev_hash``: MAC'd.

    Raises ``ValueError`` or ``TypeError`` for an entry that cannot be hashed.
    """
    draft = attrs.evolve(entry, seq=seq, prev_hash=prev_hash)
    return attrs.evolve(draft, hash=entry_mac(draft, prev_hash, key))


@frozen(kw_only=True)
class ChainStart:
    """Where the keyed chain starts: entries from ``from_seq`` on are MAC'd, the first one after
    the (legacy) entry hashed ``prev_hash``. Stored in the settings under ``START_SETTING``;
    ``mac`` (under the audit key) makes it unforgeable without the key."""

    from_seq: int
    prev_hash: str
    key_id: str
    created: str
    mac: str

    @staticmethod
    def _signed(from_seq: int, prev_hash: str, key_id: str, created: str) -> bytes:
        return f"{from_seq}\x00{prev_hash}\x00{key_id}\x00{created}".encode()

    @classmethod
    def new(cls, from_seq: int, prev_hash: str, key: AuditKey, created: datetime) -> ChainStart:
        when = canonical_time(created)
        mac = key.mac(_START_DOMAIN, cls._signed(from_seq, prev_hash, key.key_id, when))
        return cls(from_seq=from_seq, prev_hash=prev_hash, key_id=key.key_id, created=when, mac=mac)

    def holds(self, key: AuditKey) -> bool:
        """True when this record was made with ``key`` and not altered since."""
        want = key.mac(
            _START_DOMAIN, self._signed(self.from_seq, self.prev_hash, self.key_id, self.created)
        )
        return self.key_id == key.key_id and hmac.compare_digest(want, self.mac)

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ChainStart:
        """Raises ``ValueError`` for text that is not a start record."""
        try:
            data = json.loads(text)
            return cls(
                from_seq=int(data["from_seq"]),
                prev_hash=str(data["prev_hash"]),
                key_id=str(data["key_id"]),
                created=str(data["created"]),
                mac=str(data["mac"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an audit chain start record: {exc}") from exc


def chain(entry: AuditEntry, seq: int, prev_hash: str) -> AuditEntry:
    """``entry`` chained the legacy way (plain hash, no key) at ``seq`` after ``prev_hash``.

    labd no longer writes such entries; this is how rows before the keyed chain were made,
    and what a forger without the key can compute (tests use it to play the attacker).

    Raises ``ValueError`` or ``TypeError`` for an entry that cannot be hashed (a naive time,
    details that are not JSON).
    """
    draft = attrs.evolve(entry, seq=seq, prev_hash=prev_hash)
    return attrs.evolve(draft, hash=entry_hash(draft, prev_hash))


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    prev_hash: str = GENESIS,
    prev_seq: int = 0,
    key: AuditKey | None = None,
) -> int | None:
    """The ``seq`` of the first entry that breaks the chain, or ``None`` when it holds.

    An entry breaks the chain when its ``seq`` does not follow the previous one (a deleted or
    inserted row), its ``prev_hash`` is not the previous hash, or its own hash does not match
    its fields (an edited row). Pass ``prev_hash``/``prev_seq`` of the entry before the first
    one to verify a page of a longer chain. With ``key`` every entry must carry its MAC (the
    whole-log verdict, legacy rows and checkpoints included, is :mod:`lab.store.auditverify`).
    """
    for entry in entries:
        want = entry_hash(entry, prev_hash) if key is None else entry_mac(entry, prev_hash, key)
        if (
            entry.seq != prev_seq + 1
            or entry.prev_hash != prev_hash
            or not hmac.compare_digest(entry.hash, want)
        ):
            return entry.seq
        prev_hash, prev_seq = entry.hash, entry.seq
    return None


class AuditKeyMismatch(ConfigError):
    """The database's audit chain was started with another audit key."""

    code = "audit_key_mismatch"


def read_start(stored: str | None) -> ChainStart | Literal["pending"] | None:
    """The start record as stored: parsed, ``"pending"`` (left by the migration), or None
    when the settings row is missing or unreadable."""
    if stored is None:
        return None
    if stored == START_PENDING:
        return "pending"
    try:
        return ChainStart.from_json(stored)
    except ValueError:
        return None


def settle_start(
    stored: str | None, tail_seq: int, tail_hash: str, key: AuditKey, now: datetime
) -> tuple[ChainStart, bool]:
    """The start record a store opened with ``key`` works with, and whether to write it.

    ``stored`` is the settings value (``None`` when the row is missing); ``tail_*`` the last
    entry, read in the same transaction. ``"pending"`` (left by the migration) starts the keyed
    chain after the tail. Raises :class:`AuditKeyMismatch` for a chain of another key or a
    forged record, ``Unavailable`` when the record is missing or unreadable (deleted or
    tampered with: labd refuses to write on top of it; ``labctl audit verify`` says which).
    """
    if stored == START_PENDING:
        return ChainStart.new(tail_seq + 1, tail_hash, key, now), True
    hint = {"hint": "see 'tamper evidence' in docs/rbac-audit.md"}
    if stored is None:
        raise Unavailable(
            "the audit chain start record is missing from the database (deleted?)", details=hint
        )
    try:
        start = ChainStart.from_json(stored)
    except ValueError as exc:
        raise Unavailable(
            f"the audit chain start record is unreadable: {exc}", details=hint
        ) from exc
    if start.key_id != key.key_id:
        raise AuditKeyMismatch(
            f"the audit chain of this database was started with audit key {start.key_id}; this "
            f"labd holds key {key.key_id}",
            details={
                "hint": "every labd sharing a database needs the same LABD_AUDIT_KEY "
                "(or the same LABD_CA_PASSPHRASE when LABD_AUDIT_KEY is unset)"
            },
        )
    if not start.holds(key):
        raise Unavailable("the audit chain start record was forged", details=hint)
    return start, False
