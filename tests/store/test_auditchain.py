"""The pure audit chain functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import attrs

from lab.model import AuditEntry
from lab.store.auditchain import entry_hash, verify_chain

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def chain(n: int) -> list[AuditEntry]:
    entries, prev = [], ""
    for i in range(1, n + 1):
        e = AuditEntry(seq=i, time=T0, action="a", details={"i": i}, prev_hash=prev)
        e = attrs.evolve(e, hash=entry_hash(e, prev))
        entries.append(e)
        prev = e.hash
    return entries


def test_valid_chain_verifies() -> None:
    assert verify_chain(chain(10)) is None
    assert verify_chain([]) is None


def test_edited_entry_is_named() -> None:
    entries = chain(10)
    entries[6] = attrs.evolve(entries[6], result="denied")
    assert verify_chain(entries) == 7


def test_removed_and_reordered_entries_are_named() -> None:
    entries = chain(6)
    assert verify_chain(entries[:2] + entries[3:]) == 4
    assert verify_chain([entries[1], entries[0]]) == 2


def test_rehashed_entry_still_breaks_the_next_link() -> None:
    entries = chain(5)
    forged = attrs.evolve(entries[2], action="forged")
    entries[2] = attrs.evolve(forged, hash=entry_hash(forged, forged.prev_hash))
    assert verify_chain(entries) == 4


def test_hash_covers_prev_hash_and_is_timezone_neutral() -> None:
    e = AuditEntry(seq=1, time=T0, action="a")
    assert entry_hash(e, "") != entry_hash(e, "x")
    same_instant = attrs.evolve(e, time=T0.astimezone(timezone(timedelta(hours=-5))))
    assert entry_hash(same_instant, "") == entry_hash(e, "")


def test_page_of_a_chain_verifies_with_its_predecessor() -> None:
    entries = chain(6)
    assert verify_chain(entries[3:], prev_hash=entries[2].hash, prev_seq=3) is None
    assert verify_chain(entries[3:]) == 4
