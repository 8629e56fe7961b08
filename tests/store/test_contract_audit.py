"""Contract: audit append (group-committed, MAC-chained under the audit key), list filters,
last_seq, head, the keyed chain's start record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio
from audit_test_key import TEST_AUDIT_KEY

from lab.errors import Invalid
from lab.model import AuditEntry
from lab.store import Store
from lab.store.auditchain import (
    START_SETTING,
    ChainStart,
    entry_hash,
    entry_mac,
    read_start,
    verify_chain,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def test_append_chains_from_genesis(store: Store) -> None:
    assert await store.audit.last_seq() == 0
    first = await store.audit.append(
        AuditEntry(time=T0, user="alice", action="servers:list", details={"n": [1, 2]})
    )
    second = await store.audit.append(AuditEntry(time=T0, user="bob", action="exec:start"))
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == "" and second.prev_hash == first.hash
    assert first.hash == entry_mac(first, "", TEST_AUDIT_KEY)
    assert first.hash != entry_hash(first, "")  # not the keyless legacy hash
    assert await store.audit.last_seq() == 2
    assert await store.audit.head() == (2, second.hash)
    assert await store.audit.list() == [first, second]


async def test_concurrent_appends_form_one_valid_chain(store: Store) -> None:
    returned: list[AuditEntry] = []

    async def producer(i: int) -> None:
        for j in range(10):
            returned.append(
                await store.audit.append(
                    AuditEntry(user=f"u{i}", action="servers:get", details={"j": j})
                )
            )

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(producer, i)
    stored = await store.audit.list(limit=1000)
    assert len(stored) == 300
    assert [e.seq for e in stored] == list(range(1, 301))
    assert verify_chain(stored, key=TEST_AUDIT_KEY) is None
    # What each producer got back is exactly what was stored.
    assert sorted(returned, key=lambda e: e.seq) == stored


async def test_list_filters_and_paging(store: Store) -> None:
    for i in range(6):
        await store.audit.append(
            AuditEntry(
                time=T0 + timedelta(minutes=i),
                user="alice" if i % 2 else "bob",
                action="exec:start" if i < 3 else "logs:read",
            )
        )
    assert [e.seq for e in await store.audit.list(user="alice")] == [2, 4, 6]
    assert [e.seq for e in await store.audit.list(action="logs:read")] == [4, 5, 6]
    assert [e.seq for e in await store.audit.list(since=T0 + timedelta(minutes=4))] == [5, 6]
    page = await store.audit.list(limit=2)
    assert [e.seq for e in page] == [1, 2]
    nxt = await store.audit.list(after_seq=page[-1].seq, limit=2)
    assert [e.seq for e in nxt] == [3, 4]
    assert verify_chain(nxt, prev_hash=page[-1].hash, prev_seq=2, key=TEST_AUDIT_KEY) is None
    both = await store.audit.list(user="bob", action="logs:read")
    assert [e.seq for e in both] == [5]
    with pytest.raises(Invalid):
        await store.audit.list(limit=0)


async def test_naive_time_is_refused_without_breaking_the_chain(store: Store) -> None:
    with pytest.raises(Invalid):
        await store.audit.append(AuditEntry(time=datetime(2026, 1, 1), action="x"))
    ok = await store.audit.append(AuditEntry(action="y"))
    assert ok.seq == 1 and verify_chain(await store.audit.list(), key=TEST_AUDIT_KEY) is None


async def test_a_fresh_database_starts_the_keyed_chain_at_one(store: Store) -> None:
    raw = await store.settings.get(START_SETTING)
    assert raw is not None
    start = ChainStart.from_json(raw)
    assert await store.audit.chain_start() == start
    assert (start.from_seq, start.prev_hash, start.key_id) == (1, "", TEST_AUDIT_KEY.key_id)
    assert start.holds(TEST_AUDIT_KEY)
    assert await store.audit.head() == (0, "")


async def test_the_chain_start_reads_as_stored(store: Store) -> None:
    """``chain_start`` gives the record typed: parsed, "pending", or None when missing or
    unreadable (what labd's checkpointer and verifier work from)."""
    started = await store.audit.chain_start()
    assert isinstance(started, ChainStart)
    await store.settings.set(START_SETTING, "pending")
    assert await store.audit.chain_start() == "pending"
    await store.settings.set(START_SETTING, "{not json")
    assert await store.audit.chain_start() is None
    await store.settings.set(START_SETTING, started.to_json())
    assert await store.audit.chain_start() == started


def test_a_missing_chain_start_row_reads_as_none() -> None:
    assert read_start(None) is None
