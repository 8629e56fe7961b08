"""PostgreSQL-specific behaviour: whole-transaction retry on 40001, one audit chain from two
replicas, server-side cancellation, restart of the server, migrations with several replicas."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import psycopg
import pytest
import trio
from audit_test_key import TEST_AUDIT_KEY
from pg_server import PgServer, PgUnavailable, running_postgres

from lab.errors import Invalid, SchemaTooNew, Unavailable
from lab.model import AuditEntry, Server
from lab.store.auditchain import verify_chain
from lab.store.migrate import schema_files
from lab.store.postgres import PgOptions, PostgresStore, open_postgres
from lab.store.postgres.db import Conn

pytestmark = pytest.mark.postgres


def query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


async def test_serialization_failure_retries_the_whole_transaction(postgres_url: str) -> None:
    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
        await store.settings.set("n", "0")
        # Both transactions read n before either writes it: a lost update unless one of them
        # fails with 40001 and is run again from its first statement.
        both_read = threading.Barrier(2, timeout=10)
        attempts: list[str] = []

        def increment(conn: Conn, who: str) -> None:
            attempts.append(who)
            row = conn.execute("SELECT value FROM settings WHERE key = 'n'").fetchone()
            assert row is not None
            if attempts.count(who) == 1:
                both_read.wait()
            conn.execute("UPDATE settings SET value = %s WHERE key = 'n'", (str(int(row[0]) + 1),))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.db.run, increment, "a")
                nursery.start_soon(store.db.run, increment, "b")
        assert await store.settings.get("n") == "2"
        assert store.db.statistics().conflicts >= 1
        assert len(attempts) >= 3  # the loser ran again, whole


async def test_conflict_at_commit_retries_the_whole_transaction(postgres_url: str) -> None:
    """Write skew: each transaction reads both rows and writes a different one. Neither write
    blocks the other, so SERIALIZABLE can only refuse the second one at COMMIT."""
    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
        await store.settings.set("a", "0")
        await store.settings.set("b", "0")
        both_read = threading.Barrier(2, timeout=10)
        both_wrote = threading.Barrier(2, timeout=10)
        attempts: list[str] = []

        def claim(conn: Conn, key: str) -> None:
            # The invariant: at most one of a and b is "1".
            attempts.append(key)
            first = attempts.count(key) == 1
            rows = conn.execute("SELECT value FROM settings WHERE key IN ('a', 'b')").fetchall()
            if first:
                both_read.wait()
            if all(r[0] == "0" for r in rows):
                conn.execute("UPDATE settings SET value = '1' WHERE key = %s", (key,))
            if first:
                both_wrote.wait()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.db.run, claim, "a")
                nursery.start_soon(store.db.run, claim, "b")
        values = [await store.settings.get("a"), await store.settings.get("b")]
        assert sorted(values) == ["0", "1"]
        assert store.db.statistics().conflicts >= 1 and len(attempts) >= 3


async def test_two_replicas_append_one_verifiable_chain(postgres_url: str) -> None:
    async def replica(name: str, ready: trio.Event, go: trio.Event) -> PostgresStore:
        async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
            ready.set()
            await go.wait()

            async def producer(i: int) -> None:
                for j in range(10):
                    entry = AuditEntry(user=f"{name}-{i}", action="exec:start", details={"j": j})
                    await store.audit.append(entry)

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(producer, i)
            return store

    stats = []
    with trio.fail_after(40):
        go = trio.Event()
        readies = [trio.Event(), trio.Event()]

        async def run(name: str, ready: trio.Event) -> None:
            store = await replica(name, ready, go)
            stats.append(store.db.statistics())

        async with trio.open_nursery() as nursery:
            for name, ready in zip(("r1", "r2"), readies, strict=True):
                nursery.start_soon(run, name, ready)
            for ready in readies:
                await ready.wait()
            go.set()

    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
        stored = await store.audit.list(limit=1000)
    assert [e.seq for e in stored] == list(range(1, 201))
    assert verify_chain(stored, key=TEST_AUDIT_KEY) is None
    assert {e.user.split("-")[0] for e in stored} == {"r1", "r2"}
    # Report, not assert: how often the replicas collided depends on scheduling.
    print("conflicts per replica:", [s.conflicts for s in stats])


async def test_cancelled_call_cancels_its_query_server_side(postgres_url: str) -> None:
    marker = "labctl-cancel-test"

    def long_query(conn: Conn) -> None:
        conn.execute(f"SELECT pg_sleep(60) /* {marker} */")

    def active() -> int:
        rows = query(
            postgres_url,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
            (f"%pg_sleep(60) /* {marker}%",),
        )
        return int(rows[0][0])  # type: ignore[call-overload]

    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.db.run, long_query)
                while not await trio.to_thread.run_sync(active):
                    await trio.sleep(0.02)  # poll until the server runs it
                started = trio.current_time()
                nursery.cancel_scope.cancel()
            # The call came back promptly, not after pg_sleep's 60 s.
            assert trio.current_time() - started < 5
        assert await trio.to_thread.run_sync(active) == 0
        assert store.db.statistics().cancellations == 1
        assert await store.ping() < 5  # the pool is still usable


async def test_statement_timeout_is_unavailable(postgres_url: str) -> None:
    async with open_postgres(
        postgres_url, options=PgOptions(statement_timeout=0.2), audit_key=TEST_AUDIT_KEY
    ) as store:
        with pytest.raises(Unavailable, match="statement_timeout"):
            await store.db.run(lambda conn: conn.execute("SELECT pg_sleep(5)"))
        assert await store.ping() < 5


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A private server this test may stop and start (the session one is shared)."""
    if os.environ.get("LAB_TEST_POSTGRES_URL"):
        pytest.skip("restarting the server needs the throwaway PostgreSQL, not an external one")
    try:
        with running_postgres() as server:
            yield server
    except PgUnavailable as exc:
        pytest.skip(str(exc))


async def test_server_restart_unavailable_then_recovers(own_server: PgServer) -> None:
    options = PgOptions(pool_timeout=1.0, connect_timeout=1.0)
    async with open_postgres(own_server.url(), options=options, audit_key=TEST_AUDIT_KEY) as store:
        await store.servers.create(Server(name="web1"))
        await trio.to_thread.run_sync(own_server.stop)
        with trio.fail_after(20):
            with pytest.raises(Unavailable):
                await store.servers.list()
            with pytest.raises(Unavailable):
                await store.servers.create(Server(name="web2"))
            with pytest.raises(Unavailable):
                await store.audit.append(AuditEntry(action="x"))
        await trio.to_thread.run_sync(own_server.start)
        with trio.fail_after(30):
            while True:
                try:
                    await store.ping()
                    break
                except Unavailable:
                    continue  # each try waits up to pool_timeout for a reconnect
        assert [s.name for s in await store.servers.list()] == ["web1"]
        entry = await store.audit.append(AuditEntry(action="after-restart"))
        assert entry.seq == 1


async def test_unreachable_server_is_unavailable() -> None:
    options = PgOptions(connect_timeout=1.0)
    with trio.fail_after(15), pytest.raises(Unavailable, match=r"127\.0\.0\.1"):
        async with open_postgres(
            "postgresql://nobody@127.0.0.1:9/none", options=options, audit_key=TEST_AUDIT_KEY
        ):
            pass


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    versions: list[int] = []

    async def start() -> None:
        async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
            versions.append(await store.schema_version())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(start)
    latest = schema_files("postgres")[-1].version
    assert versions == [latest] * 3
    applied = query(postgres_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert applied == [(m.version,) for m in schema_files("postgres")]


async def test_newer_schema_is_refused_untouched(postgres_url: str) -> None:
    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY):
        pass
    query(
        postgres_url,
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', now())",
    )
    query(postgres_url, "DELETE FROM roles WHERE name = 'viewer'")
    with pytest.raises(SchemaTooNew):
        async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY):
            pass
    # Refused before the seed ran: the deleted role was not put back.
    assert query(postgres_url, "SELECT name FROM roles WHERE name = 'viewer'") == []


async def test_cockroachdb_scheme_is_accepted(postgres_url: str) -> None:
    url = postgres_url.replace("postgresql://", "cockroachdb://", 1)
    async with open_postgres(url, audit_key=TEST_AUDIT_KEY) as store:
        assert store.url == url
        assert await store.schema_version() == schema_files("postgres")[-1].version


async def test_call_deadline_bounds_the_wait_while_the_server_is_down(
    own_server: PgServer,
) -> None:
    # The pool alone would keep a caller waiting pool_timeout (twice for a read: it is retried).
    options = PgOptions(call_timeout=1.5, pool_timeout=10.0, connect_timeout=5.0)
    bound = options.call_timeout + 1.0
    async with open_postgres(own_server.url(), options=options, audit_key=TEST_AUDIT_KEY) as store:
        await store.servers.create(Server(name="web1"))
        await trio.to_thread.run_sync(own_server.stop)
        with trio.fail_after(20):
            for call in (
                store.servers.list,
                lambda: store.servers.create(Server(name="web2")),
                lambda: store.audit.append(AuditEntry(action="x")),
            ):
                started = trio.current_time()
                with pytest.raises(Unavailable):
                    await call()
                assert trio.current_time() - started < bound
        await trio.to_thread.run_sync(own_server.start)
        with trio.fail_after(30):
            while True:
                try:
                    await store.ping()
                    break
                except Unavailable:
                    continue  # the pool reconnects with backoff
        await store.servers.create(Server(name="web3"))
        assert sorted(s.name for s in await store.servers.list()) == ["web1", "web3"]


async def test_call_deadline_cancels_the_query_server_side(postgres_url: str) -> None:
    marker = "labctl-deadline-test"
    options = PgOptions(call_timeout=1.0, statement_timeout=60.0)

    def long_query(conn: Conn) -> None:
        conn.execute(f"SELECT pg_sleep(30) /* {marker} */")

    async with open_postgres(postgres_url, options=options, audit_key=TEST_AUDIT_KEY) as store:
        started = trio.current_time()
        with trio.fail_after(10), pytest.raises(Unavailable, match="did not answer within 1 s"):
            await store.db.run(long_query)
        assert trio.current_time() - started < options.call_timeout + 1.0
        rows = query(
            postgres_url,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
            (f"%pg_sleep(30) /* {marker}%",),
        )
        assert rows == [(0,)]
        stats = store.db.statistics()
        assert (stats.deadlines, stats.cancellations) == (1, 1)
        assert await store.ping() < 1  # the pool is still usable


async def test_a_nul_in_an_audit_entry_fails_that_entry_alone(postgres_url: str) -> None:
    """PostgreSQL text cannot hold NUL: the codec refuses it before the INSERT, so the batch's
    other entries commit and the chain goes on."""
    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
        await store.audit.start_chain()
        results: dict[str, AuditEntry | Exception] = {}

        async def append(name: str, entry: AuditEntry) -> None:
            try:
                results[name] = await store.audit.append(entry)
            except Invalid as exc:
                results[name] = exc

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(append, "bad", AuditEntry(user="a\x00b", action="x"))
                nursery.start_soon(append, "good", AuditEntry(user="ab", action="x"))
        assert isinstance(results["bad"], Invalid) and "NUL" in str(results["bad"])
        good = results["good"]
        assert isinstance(good, AuditEntry) and good.seq == 1
        assert verify_chain(await store.audit.list(), key=TEST_AUDIT_KEY) is None
