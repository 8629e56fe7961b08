"""Known answers for the audit chain: the exact bytes hashed and the exact hashes and MACs.

Every stored chain depends on them: a change to the canonical JSON, the MAC's domain or the
key id breaks every existing chain after an upgrade, so it must be a deliberate, migrated one.
The process runs in a local time zone far from UTC so a hash taken in local time shows.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from audit_test_key import TEST_AUDIT_KEY

from lab.errors import Unavailable
from lab.model import AuditEntry
from lab.store.auditchain import (
    GENESIS,
    START_PENDING,
    START_SETTING,
    AuditKey,
    AuditKeyMismatch,
    ChainStart,
    canonical_json,
    canonical_time,
    chain,
    chain_keyed,
    entry_hash,
    entry_mac,
    settle_start,
    verify_chain,
)

PREV = "ab" * 32
WHEN = datetime(2026, 3, 29, 1, 30, 5, 42, tzinfo=UTC)
ENTRY = AuditEntry(
    seq=7,
    time=WHEN,
    user="user/ann",
    session="s-1",
    action="exec:run",
    resource="server/wéb",
    result="denied",
    duration_ms=12,
    source="10.0.0.1",
    details={"b": [1, 2], "a": "ü"},
    prev_hash=PREV,
)
CANONICAL = (
    '{"action":"exec:run","details":{"a":"ü","b":[1,2]},"duration_ms":12.0,'
    f'"prev_hash":"{PREV}","resource":"server/wéb","result":"denied","seq":7,"session":"s-1",'
    '"source":"10.0.0.1","time":"2026-03-29T01:30:05.000042+00:00","user":"user/ann"}'
)
HASH = "d2c30e843279963d76bb51e7d27e83bd8bf4045e33750c125e423e3c8c7ee415"
MAC = "509f6f4c976440ceaf15994cfccfccd4c4ebe8c5849f7fd4aef9d61e3834d740"
KEY_ID = "ed29c2aebf33353b"
# 05:30 east of UTC, no DST, written as a POSIX TZ string (needs no tz database)
LOCAL_TZ = "IST-5:30"


@pytest.fixture(autouse=True)
def local_time_far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", LOCAL_TZ)
    time.tzset()
    assert time.localtime(0).tm_hour == 5
    yield
    monkeypatch.undo()
    time.tzset()


def test_canonical_json_is_pinned() -> None:
    assert canonical_json(ENTRY) == CANONICAL
    # an entry made in another zone is the same instant, hence the same bytes
    local = attrs.evolve(ENTRY, time=WHEN.astimezone(timezone(timedelta(hours=-7))))
    assert canonical_json(local) == CANONICAL
    assert canonical_json(attrs.evolve(ENTRY, time=WHEN.astimezone())) == CANONICAL


def test_canonical_time_is_utc_with_microseconds() -> None:
    assert canonical_time(WHEN) == "2026-03-29T01:30:05.000042+00:00"
    assert canonical_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000+00:00"
    east = datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert canonical_time(east) == "2026-01-01T00:00:00.000000+00:00"
    with pytest.raises(ValueError, match=r"^audit times must carry a timezone$"):
        canonical_time(datetime(2026, 1, 1))


def test_legacy_hash_is_pinned() -> None:
    formula = hashlib.sha256(PREV.encode() + CANONICAL.encode("utf-8")).hexdigest()
    assert entry_hash(ENTRY, PREV) == formula == HASH
    legacy = chain(attrs.evolve(ENTRY, prev_hash="", hash="x"), 7, PREV)
    assert (legacy.seq, legacy.prev_hash, legacy.hash) == (7, PREV, HASH)


def test_mac_is_pinned() -> None:
    secret = b"labctl test audit key, 32 bytes!"
    message = b"labctl-audit-v1\x00" + PREV.encode() + b"\x00" + CANONICAL.encode("utf-8")
    formula = hmac.new(secret, message, hashlib.sha256).hexdigest()
    assert entry_mac(ENTRY, PREV, TEST_AUDIT_KEY) == formula == MAC
    keyed = chain_keyed(attrs.evolve(ENTRY, seq=1, prev_hash=""), 7, PREV, TEST_AUDIT_KEY)
    assert (keyed.seq, keyed.prev_hash, keyed.hash) == (7, PREV, MAC)
    assert entry_mac(ENTRY, PREV, AuditKey(b"another key of at least 32 bytes")) != MAC


def test_key_id_and_derived_keys_are_pinned() -> None:
    secret = b"labctl test audit key, 32 bytes!"
    assert TEST_AUDIT_KEY.key_id == KEY_ID
    assert hmac.new(secret, b"labctl audit key id v1", hashlib.sha256).hexdigest()[:16] == KEY_ID
    derived = hmac.new(secret, b"labctl-derive-v1\x00x", hashlib.sha256).digest()
    assert TEST_AUDIT_KEY.derive(b"x") == derived
    assert TEST_AUDIT_KEY.mac(b"a", b"b") == hmac.new(secret, b"ab", hashlib.sha256).hexdigest()
    assert "labctl test" not in repr(TEST_AUDIT_KEY)


def test_an_audit_key_needs_32_bytes() -> None:
    AuditKey(b"k" * 32)
    with pytest.raises(ValueError, match=r"^an audit key needs at least 32 bytes$"):
        AuditKey(b"k" * 31)


def test_chain_start_record_is_pinned() -> None:
    created = datetime(2026, 11, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    start = ChainStart.new(5, "cd" * 32, TEST_AUDIT_KEY, created)
    signed = f"5\x00{'cd' * 32}\x00{KEY_ID}\x002026-11-01T06:30:00.000000+00:00".encode()
    mac = TEST_AUDIT_KEY.mac(b"labctl-audit-start-v1\x00", signed)
    assert start == ChainStart(
        from_seq=5,
        prev_hash="cd" * 32,
        key_id=KEY_ID,
        created="2026-11-01T06:30:00.000000+00:00",
        mac=mac,
    )
    assert mac == "0895179cd83ad90b2a3dab46f499fdec3b3cee145720624cd31d8bce970777b0"
    assert start.to_json() == (
        '{"created":"2026-11-01T06:30:00.000000+00:00","from_seq":5,'
        f'"key_id":"{KEY_ID}","mac":"{mac}","prev_hash":"{"cd" * 32}"}}'
    )
    assert ChainStart.from_json(start.to_json()) == start
    assert start.holds(TEST_AUDIT_KEY)


@pytest.mark.parametrize(
    "field", ["from_seq", "prev_hash", "key_id", "created", "mac"], ids=lambda f: f
)
def test_a_chain_start_record_with_any_field_changed_does_not_hold(field: str) -> None:
    start = ChainStart.new(5, "cd" * 32, TEST_AUDIT_KEY, WHEN)
    changed = attrs.evolve(start, **{field: 6 if field == "from_seq" else "0" * 16})
    assert not changed.holds(TEST_AUDIT_KEY)


def test_a_chain_start_record_of_another_key_does_not_hold() -> None:
    other = AuditKey(b"another key of at least 32 bytes")
    start = ChainStart.new(5, "cd" * 32, other, WHEN)
    assert not start.holds(TEST_AUDIT_KEY)
    # same key id claimed, MAC from the other key
    assert not attrs.evolve(start, key_id=KEY_ID).holds(TEST_AUDIT_KEY)


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{}", '{"from_seq":"x","prev_hash":"","key_id":"","created":"","mac":""}'],
)
def test_unreadable_start_records(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not an audit chain start record: "):
        ChainStart.from_json(text)


def test_settle_start() -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    start, write = settle_start(START_PENDING, 41, "ee" * 32, TEST_AUDIT_KEY, now)
    assert write is True
    assert start == ChainStart.new(42, "ee" * 32, TEST_AUDIT_KEY, now)
    assert START_SETTING == "audit_chain" and START_PENDING == "pending" and GENESIS == ""

    assert settle_start(start.to_json(), 99, "ff", TEST_AUDIT_KEY, now) == (start, False)

    missing = r"^the audit chain start record is missing from the database \(deleted\?\)$"
    with pytest.raises(Unavailable, match=missing) as info:
        settle_start(None, 0, "", TEST_AUDIT_KEY, now)
    assert info.value.details == {"hint": "see 'tamper evidence' in docs/rbac-audit.md"}
    with pytest.raises(Unavailable, match="unreadable") as info:
        settle_start("{", 0, "", TEST_AUDIT_KEY, now)
    assert info.value.details == {"hint": "see 'tamper evidence' in docs/rbac-audit.md"}
    forged = attrs.evolve(start, from_seq=1).to_json()
    with pytest.raises(Unavailable, match=r"^the audit chain start record was forged$") as info:
        settle_start(forged, 0, "", TEST_AUDIT_KEY, now)
    assert info.value.details == {"hint": "see 'tamper evidence' in docs/rbac-audit.md"}
    other = ChainStart.new(1, "", AuditKey(b"another key of at least 32 bytes"), now)
    with pytest.raises(AuditKeyMismatch) as mismatch:
        settle_start(other.to_json(), 0, "", TEST_AUDIT_KEY, now)
    assert other.key_id in mismatch.value.message and KEY_ID in mismatch.value.message
    assert mismatch.value.details == {
        "hint": "every labd sharing a database needs the same LABD_AUDIT_KEY (or the same "
        "LABD_CA_PASSPHRASE when LABD_AUDIT_KEY is unset)"
    }
    assert mismatch.value.code == "audit_key_mismatch"


def _keyed_chain(n: int, key: AuditKey = TEST_AUDIT_KEY) -> list[AuditEntry]:
    entries, prev = [], GENESIS
    for i in range(1, n + 1):
        entries.append(
            chain_keyed(AuditEntry(time=WHEN, action="a", details={"i": i}), i, prev, key)
        )
        prev = entries[-1].hash
    return entries


def test_verify_chain_with_a_key() -> None:
    entries = _keyed_chain(5)
    assert verify_chain(entries, key=TEST_AUDIT_KEY) is None
    assert verify_chain(entries) == 1  # MACs are not plain hashes
    assert verify_chain(entries, key=AuditKey(b"another key of at least 32 bytes")) == 1
    assert (
        verify_chain(entries[2:], prev_hash=entries[1].hash, prev_seq=2, key=TEST_AUDIT_KEY) is None
    )
    assert verify_chain(entries[2:], prev_hash=entries[1].hash, prev_seq=1, key=TEST_AUDIT_KEY) == 3
    assert verify_chain(entries[2:], prev_hash=entries[0].hash, prev_seq=2, key=TEST_AUDIT_KEY) == 3
    # a link is checked on its own, not only through the MAC
    relinked = attrs.evolve(entries[3], prev_hash="00")
    relinked = attrs.evolve(relinked, hash=entry_mac(relinked, entries[2].hash, TEST_AUDIT_KEY))
    assert verify_chain([*entries[:3], relinked], key=TEST_AUDIT_KEY) == 4
    assert verify_chain([*entries[:3], relinked, entries[4]], key=TEST_AUDIT_KEY) == 4
