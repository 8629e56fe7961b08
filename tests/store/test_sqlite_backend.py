"""SQLite-specific behaviour: durability seen from another connection, tampering, migrations,
refusal of a newer schema, seed, pragmas, unusable paths."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import trio
from audit_test_key import TEST_AUDIT_KEY

from lab.errors import ConfigError, SchemaTooNew, Unavailable
from lab.model import AuditEntry, Role, Server
from lab.store import open_store
from lab.store.auditchain import verify_chain
from lab.store.migrate import Migration, schema_files
from lab.store.seed import BUILTIN_ROLES
from lab.store.sqlite import SqliteStore, open_sqlite
from lab.store.sqlite.db import migrate, path_from_url


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_append_is_visible_to_another_connection_on_return(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        seen: list[int] = []

        async def producer(i: int) -> None:
            entry = await store.audit.append(AuditEntry(action="exec:start", user=f"u{i}"))
            # Read from an independent connection the instant append returned.
            rows = query(db, "SELECT user FROM audit WHERE seq = ?", (entry.seq,))
            assert rows == [(f"u{i}",)]
            seen.append(entry.seq)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(producer, i)
        assert sorted(seen) == list(range(1, 51))


async def test_heartbeat_is_durable_on_return(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    db = tmp_path / "lab.db"
    now = datetime.now(UTC)
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        s = await store.servers.create(Server(name="n"))
        await store.agents.heartbeat(s.id, replica="r1", seen=now, lease_until=now + timedelta(1))
        rows = query(db, "SELECT replica FROM agent_leases WHERE server_id = ?", (s.id,))
        assert rows == [("r1",)]


async def test_tampered_row_is_named_by_verify_chain(tmp_path: Path, key=TEST_AUDIT_KEY) -> None:
    db = tmp_path / "lab.db"
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        for i in range(20):
            await store.audit.append(AuditEntry(action="servers:get", resource=f"server/{i}"))
        assert verify_chain(await store.audit.list(), key=TEST_AUDIT_KEY) is None
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("UPDATE audit SET result = 'denied' WHERE seq = 13")
        conn.close()
        assert verify_chain(await store.audit.list(), key=TEST_AUDIT_KEY) == 13


async def test_deleted_row_is_named_by_verify_chain(tmp_path: Path, key=TEST_AUDIT_KEY) -> None:
    db = tmp_path / "lab.db"
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        for _ in range(5):
            await store.audit.append(AuditEntry(action="a"))
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("DELETE FROM audit WHERE seq = 3")
        conn.close()
        assert verify_chain(await store.audit.list(), key=TEST_AUDIT_KEY) == 4


async def test_chain_continues_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        await store.audit.append(AuditEntry(action="a"))
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        second = await store.audit.append(AuditEntry(action="b"))
        assert second.seq == 2
        assert verify_chain(await store.audit.list(), key=TEST_AUDIT_KEY) is None


async def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        first_version = await store.schema_version()
    before = query(db, "SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        assert await store.schema_version() == first_version
    after = query(db, "SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert before == after
    known = schema_files("sqlite")
    assert [(v, n) for v, n, _ in after] == [(m.version, m.name) for m in known]
    assert first_version == known[-1].version


def test_failed_migration_rolls_back_and_is_not_recorded(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        good = Migration(version=1, name="one", sql="CREATE TABLE a (x INTEGER);")
        bad = Migration(
            version=2, name="two", sql="CREATE TABLE b (x INTEGER);\nINSERT INTO nope VALUES (1);"
        )
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, [good, bad])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "a" in tables and "b" not in tables
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert migrate(conn, [good]) == []
    finally:
        conn.close()


async def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name, applied_at)"
        )
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'future', '2030-01-01')")
    conn.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(SchemaTooNew) as info:
        async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY):
            pytest.fail("a too-new database must not open")
    assert info.value.details["database_version"] == 9999
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert query(db, "PRAGMA journal_mode") == [("delete",)]
    assert not (tmp_path / "newer.db-wal").exists()


async def test_seed_is_idempotent_and_restores_builtin_roles(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        await store.roles.upsert(Role(name="operator", permissions=()))
        await store.roles.upsert(Role(name="custom"))
    count = query(db, "SELECT count(*) FROM role_permissions")
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        roles = {r.name: r for r in await store.roles.list()}
        for seeded in BUILTIN_ROLES:
            assert roles[seeded.name] == seeded
        assert "custom" in roles
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY):
        pass
    expected = sum(len(r.permissions) for r in BUILTIN_ROLES)
    assert query(db, "SELECT count(*) FROM role_permissions") == [(expected,)]
    assert count == [(sum(len(r.permissions) for r in BUILTIN_ROLES if r.name != "operator"),)]


async def test_connection_pragmas(tmp_path: Path) -> None:
    async with open_sqlite(url_of(tmp_path / "lab.db"), audit_key=TEST_AUDIT_KEY) as store:
        assert await store.pragmas() == {
            "journal_mode": "wal",
            "synchronous": 1,  # NORMAL
            "foreign_keys": 1,
            "busy_timeout": 5000,
        }


async def test_parent_directory_is_created(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "lab.db"
    async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY) as store:
        assert await store.schema_version() >= 1
    assert db.exists()


async def test_unusable_directory_is_unavailable_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    db = blocker / "sub" / "lab.db"
    with pytest.raises(Unavailable) as info:
        async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY):
            pytest.fail("must not open")
    assert str(blocker / "sub") in info.value.message


async def test_garbage_file_is_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Unavailable) as info:
        async with open_store(url_of(db), audit_key=TEST_AUDIT_KEY):
            pytest.fail("must not open")
    assert str(db) in info.value.message


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    committed: list[int] = []

    async def append(store: SqliteStore, i: int) -> None:
        committed.append((await store.audit.append(AuditEntry(action=f"a{i}"))).seq)

    async def release() -> None:
        blocker.execute("ROLLBACK")

    # Another process holds the write lock, so the first batch waits in its thread and the
    # rest pile up in the queue; the store is closed while they are still queued.
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        with trio.fail_after(20):
            async with (
                trio.open_nursery() as producers,
                open_sqlite(url_of(db), audit_key=TEST_AUDIT_KEY) as store,
            ):
                blocker.execute("BEGIN IMMEDIATE")
                producers.start_soon(append, store, 0)
                while store.writer.statistics().in_flight == 0:
                    await trio.sleep(0)
                for i in range(1, 200):
                    producers.start_soon(append, store, i)
                while store.writer.statistics().queued < 199:
                    await trio.sleep(0)
                # Runs at the next checkpoint, i.e. once closing has begun.
                producers.start_soon(release)
    finally:
        blocker.close()
    assert sorted(committed) == list(range(1, 201))
    assert [r[0] for r in query(db, "SELECT seq FROM audit ORDER BY seq")] == list(range(1, 201))


async def test_writes_after_close_are_unavailable(tmp_path: Path) -> None:
    async with open_sqlite(url_of(tmp_path / "lab.db"), audit_key=TEST_AUDIT_KEY) as store:
        pass
    with pytest.raises(Unavailable):
        await store.audit.append(AuditEntry(action="late"))


def test_url_forms() -> None:
    assert path_from_url("sqlite:////var/lib/labd/labd.db") == Path("/var/lib/labd/labd.db")
    assert path_from_url("sqlite:///labd.db") == Path("labd.db")
    assert path_from_url("sqlite:///~/x.db") == Path.home() / "x.db"
    with pytest.raises(ConfigError):
        path_from_url("sqlite:///")
