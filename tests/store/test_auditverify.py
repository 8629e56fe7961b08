"""The whole-log verdict (ChainVerifier) on its own: every kind of break, named with its entry,
its counts and its reason, whether the log is fed in one page or many."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import attrs
import pytest
from audit_test_key import TEST_AUDIT_KEY

from lab.model import AuditEntry
from lab.store.auditchain import AuditKey, ChainStart, chain, chain_keyed, entry_hash, entry_mac
from lab.store.auditverify import KINDS, ChainVerifier, Checkpoint, Verdict

WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
OTHER_KEY = AuditKey(b"another key of at least 32 bytes")


def history(legacy: int = 3, keyed: int = 5) -> tuple[list[AuditEntry], ChainStart]:
    """``legacy`` plain-hashed entries, then ``keyed`` MAC'd ones, and their start record."""
    entries: list[AuditEntry] = []
    prev = ""
    for seq in range(1, legacy + 1):
        entries.append(chain(AuditEntry(time=WHEN, action="old", details={"n": seq}), seq, prev))
        prev = entries[-1].hash
    start = ChainStart.new(legacy + 1, prev, TEST_AUDIT_KEY, WHEN)
    for seq in range(legacy + 1, legacy + keyed + 1):
        entry = AuditEntry(time=WHEN, action="new", details={"n": seq})
        entries.append(chain_keyed(entry, seq, prev, TEST_AUDIT_KEY))
        prev = entries[-1].hash
    return entries, start


def checkpoint(entries: Sequence[AuditEntry], seq: int, *, chain_from: int = 4) -> Checkpoint:
    head = entries[seq - 1].hash if seq else ""
    return Checkpoint(
        seq=seq,
        head=head,
        chain_from=chain_from,
        key_id=TEST_AUDIT_KEY.key_id,
        time="2026-11-01T12:00:00.000000+00:00",
        source=f"cp{seq}",
    )


def verdict(
    entries: Sequence[AuditEntry],
    start: ChainStart | str | None,
    checkpoints: Sequence[Checkpoint] = (),
    *,
    page: int = 1000,
    key: AuditKey = TEST_AUDIT_KEY,
) -> Verdict:
    verifier = ChainVerifier(key, start, checkpoints)
    for i in range(0, len(entries), page):
        broken = verifier.feed(entries[i : i + page])
        if broken is not None:
            assert verifier.feed(entries) is broken  # sticky
            assert verifier.finish() is broken
            return broken
    return verifier.finish()


@pytest.mark.parametrize("page", [1, 2, 3, 1000])
def test_an_intact_log_in_pages_of_any_size(page: int) -> None:
    entries, start = history()
    cps = [checkpoint(entries, 8), checkpoint(entries, 5)]
    v = verdict(entries, start, cps, page=page)
    assert v == Verdict(kind="ok", checked=8, last_seq=8, head=entries[-1].hash, legacy=3)
    assert v.ok and v.broken_at is None and v.reason == ""


def test_an_empty_log_before_any_entry_is_ok() -> None:
    v = verdict([], "pending")
    assert v == Verdict(kind="ok", checked=0, last_seq=0, head="", legacy=0)
    _, start = history(legacy=0, keyed=0)
    assert verdict([], start).ok


def test_a_pending_log_is_all_legacy() -> None:
    entries, _ = history(legacy=4, keyed=0)
    v = verdict(entries, "pending", page=3)
    assert (v.kind, v.checked, v.legacy, v.last_seq) == ("ok", 4, 4, 4)


def test_a_pending_start_with_checkpoints_was_reset() -> None:
    entries, _ = history(legacy=4, keyed=0)
    v = verdict(entries, "pending", [checkpoint(entries, 4)])
    assert v.kind == "start_missing" and not v.ok
    assert v.reason == "the audit chain start record was reset although checkpoints exist"
    assert (v.checked, v.last_seq, v.head, v.broken_at) == (0, 0, "", None)


def test_a_missing_start_record() -> None:
    entries, _ = history()
    v = verdict(entries, None)
    assert v.kind == "start_missing"
    assert v.reason == "the audit chain start record is missing"


def test_a_start_record_of_another_key() -> None:
    entries, start = history()
    v = verdict(entries, start, key=OTHER_KEY)
    assert v.kind == "wrong_key"
    assert v.reason == (
        f"the audit chain was started with key {TEST_AUDIT_KEY.key_id}, this labd holds key "
        f"{OTHER_KEY.key_id} (set the same LABD_AUDIT_KEY on every replica)"
    )


def test_a_forged_start_record() -> None:
    entries, start = history()
    v = verdict(entries, attrs.evolve(start, from_seq=2))
    assert (v.kind, v.reason) == ("wrong_key", "the audit chain start record was forged")


def test_a_checkpoint_of_another_chain_start() -> None:
    entries, start = history()
    v = verdict(entries, start, [checkpoint(entries, 5), checkpoint(entries, 8, chain_from=1)])
    assert v.kind == "rewritten"
    assert v.reason == (
        "the chain start record says the keyed chain starts at #4, but the checkpoint cp8 "
        "recorded #1"
    )


@pytest.mark.parametrize("page", [1, 4, 1000])
def test_deleted_entries_are_named(page: int) -> None:
    entries, start = history()
    v = verdict(entries[:4] + entries[5:], start, page=page)
    assert (v.kind, v.broken_at, v.checked, v.last_seq) == ("deleted", 6, 4, 4)
    assert v.head == entries[3].hash and v.entry == entries[5] and v.legacy == 3
    assert v.reason == "entry #5 is missing (deleted)"
    v = verdict(entries[:1] + entries[4:], start, page=page)
    assert (v.kind, v.broken_at, v.checked) == ("deleted", 5, 1)
    assert v.reason == "entries #2 to #4 are missing (deleted)"
    v = verdict(entries[1:], start, page=page)
    assert (v.kind, v.broken_at, v.reason) == ("deleted", 2, "entry #1 is missing (deleted)")


def test_entries_out_of_order() -> None:
    entries, start = history()
    v = verdict([*entries[:5], entries[3], *entries[5:]], start)
    assert (v.kind, v.broken_at, v.checked) == ("edited", 4, 5)
    assert v.reason == "entry #4 is out of order"


def test_rewritten_legacy_entries_before_the_keyed_chain() -> None:
    entries, start = history()
    # the attacker rewrites legacy entry 2 and re-chains the legacy part (no key needed)
    forged = chain(attrs.evolve(entries[1], action="forged"), 2, entries[0].hash)
    third = chain(entries[2], 3, forged.hash)
    v = verdict([entries[0], forged, third, *entries[3:]], start)
    assert (v.kind, v.broken_at, v.checked, v.legacy) == ("rechained", 4, 3, 3)
    assert v.reason == (
        "the legacy entries before #4 were rewritten: they no longer end with the hash the keyed "
        "chain started from"
    )


def test_a_link_broken_under_a_valid_mac() -> None:
    """An entry whose MAC holds for its fields but whose prev_hash names another entry."""
    entries, start = history()
    relinked = attrs.evolve(entries[5], prev_hash=entries[3].hash)
    relinked = attrs.evolve(relinked, hash=entry_mac(relinked, entries[4].hash, TEST_AUDIT_KEY))
    v = verdict([*entries[:5], relinked, *entries[6:]], start)
    assert (v.kind, v.broken_at) == ("deleted", 6)
    assert v.reason == ("entry #6 does not link to entry #5 (entries were removed or replaced)")
    # the same in the legacy part
    legacy = attrs.evolve(entries[1], prev_hash="00")
    legacy = attrs.evolve(legacy, hash=entry_hash(legacy, entries[0].hash))
    v = verdict([entries[0], legacy], "pending")
    assert (v.kind, v.broken_at) == ("deleted", 2)


def test_an_edited_legacy_entry() -> None:
    entries, start = history()
    v = verdict([entries[0], attrs.evolve(entries[1], result="denied"), *entries[2:]], start)
    assert (v.kind, v.broken_at, v.checked, v.legacy) == ("edited", 2, 1, 1)
    assert v.reason == "entry #2 does not match its hash (edited)"


def test_an_edited_keyed_entry() -> None:
    entries, start = history()
    v = verdict([*entries[:6], attrs.evolve(entries[6], user="user/eve"), entries[7]], start)
    assert (v.kind, v.broken_at, v.checked, v.legacy) == ("edited", 7, 6, 3)
    assert v.reason == "entry #7 does not match its MAC (edited)"


def test_a_keyed_entry_with_a_plain_hash_was_rechained() -> None:
    entries, start = history()
    forged = chain(attrs.evolve(entries[4], user="user/eve"), 5, entries[3].hash)
    v = verdict([*entries[:4], forged], start)
    assert (v.kind, v.broken_at) == ("rechained", 5)
    assert v.reason == (
        "entry #5 carries a plain hash where the audit key's MAC is required: the chain was "
        "re-computed without the key"
    )


def test_an_entry_other_than_the_checkpointed_one() -> None:
    entries, start = history()
    good = checkpoint(entries, 6)
    bad = attrs.evolve(good, head="00" * 32, source="witness.json")
    v = verdict(entries, start, [good, bad], page=2)
    assert (v.kind, v.broken_at, v.checked) == ("rewritten", 6, 5)
    assert v.reason == (
        "entry #6 is not the one the checkpoint witness.json of "
        "2026-11-01T12:00:00.000000+00:00 recorded"
    )


def test_a_truncated_log_is_measured_against_the_newest_checkpoint() -> None:
    entries, start = history()
    cps = [checkpoint(entries, 8), checkpoint(entries, 4)]
    v = verdict(entries[:6], start, cps, page=4)
    assert (v.kind, v.broken_at, v.checked, v.last_seq) == ("truncated", 7, 6, 6)
    assert v.head == entries[5].hash and v.entry is None and v.legacy == 3
    assert v.reason == (
        "the audit log ends at #6 but the checkpoint cp8 of 2026-11-01T12:00:00.000000+00:00 "
        "recorded #8: entries were deleted"
    )
    assert verdict(entries[:8], start, cps).ok


def test_a_log_cut_below_the_keyed_chain_start() -> None:
    entries, start = history()
    v = verdict(entries[:2], start, [checkpoint(entries, 1)])
    assert (v.kind, v.broken_at) == ("truncated", 3)
    assert v.reason == (
        "the audit log ends at #2 but the keyed chain started after #3: entries were deleted"
    )
    assert verdict(entries[:3], start).ok


def test_a_wiped_log() -> None:
    entries, start = history()
    v = verdict([], start, [checkpoint(entries, 5)])
    assert (v.kind, v.broken_at, v.checked, v.last_seq, v.head) == ("wiped", 1, 0, 0, "")
    assert v.reason.startswith("the audit log is empty but the checkpoint cp5 of ")
    v = verdict([], start)
    assert v.reason == (
        "the audit log is empty but the keyed chain started after #3: entries were deleted"
    )


def test_kinds_are_the_documented_ones() -> None:
    assert KINDS == (
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
    )
