"""No change without its audit entry: kill -9 a real labd process while clients create join
tokens and set server labels as fast as they can; after a restart every token and every label
value in the database has its audit entry (committed in the same transaction), whether or not
its request was answered, on SQLite and on PostgreSQL.

Before, the entry was written by an after-request hook once the change had committed: a kill
in between left changes without entries.
"""

# ruff: noqa: F811 -- the database fixture is imported from audit_rig and requested by name.

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from lab import pki
from lab.errors import Conflict, NotFound, Unavailable
from lab.model import AuditEntry, Role
from lab.store import audit_next_change, open_store
from lab.store.auditchain import AuditKey, verify_chain
from tests.e2e.procs import free_port
from tests.labd.harness import Credentials
from tests.security.audit_rig import database, labd_process, pg  # noqa: F401 (fixtures)

WORKERS = 8
KILL_AFTER = 80  # answered changes before each kill
ROUNDS = 3  # kills: each is a chance to catch a change committed before its entry
SERVER = "node1"
KEY = AuditKey(b"labctl atomic audit test key 32b")


def client(data: Path, port: int, creds: Credentials | None = None) -> httpx.AsyncClient:
    ca = (data / "ca.pem").read_bytes()
    ctx = (
        pki.client_ssl_context(ca, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
        if creds
        else pki.client_ssl_context(ca)
    )
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=30)


async def setup(data: Path, port: int) -> Credentials:
    """Enroll the admin and one agent (the server whose labels the load sets)."""
    key = pki.generate_key()
    token = (data / "bootstrap-token").read_text().strip()
    async with client(data, port) as http:
        resp = await http.post(
            "/api/auth/user-enroll",
            json={"token": token, "csr": pki.make_csr(key, "x").decode(), "username": "admin"},
        )
        assert resp.status_code == 201, resp.text
    admin = Credentials(key_pem=key, cert_pem=resp.json()["certificate"].encode(), subject="a")
    async with client(data, port, admin) as http:
        made = await http.post("/api/tokens", json={"kind": "agent", "hostname": SERVER})
        assert made.status_code == 201, made.text
        csr = pki.make_csr(pki.generate_key(), "x").decode()
        enrolled = await http.post(
            "/api/auth/enroll",
            json={"token": made.json()["token"], "csr": csr, "hostname": SERVER, "facts": {}},
        )
        assert enrolled.status_code == 201, enrolled.text
    return admin


async def load_until_killed(
    data: Path, port: int, admin: Credentials, proc: trio.Process, round_: int
) -> int:
    """Half the workers create tokens, half set labels; kill -9 labd mid-burst."""
    answered = 0
    enough = trio.Event()

    async def worker(w: int) -> None:
        nonlocal answered
        async with client(data, port, admin) as http:
            for i in range(100_000):
                rid = f"w{w}-{round_}-{i}"
                try:
                    if w % 2:
                        resp = await http.post(
                            "/api/tokens",
                            json={"kind": "agent", "description": rid},
                            headers={"X-Request-Id": rid},
                        )
                    else:
                        resp = await http.patch(
                            f"/api/servers/{SERVER}/labels",
                            json={"set": {f"w{w}": f"v{round_}-{i}"}},
                        )
                except httpx.TransportError:
                    return  # labd is gone
                if resp.is_success:
                    answered += 1
                    if answered >= KILL_AFTER:
                        enough.set()

    async with trio.open_nursery() as nursery:
        for w in range(WORKERS):
            nursery.start_soon(worker, w)
        await enough.wait()
        os.kill(proc.pid, signal.SIGKILL)
    return answered


async def audit_entries(http: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        page = (
            await http.get("/api/audit", params={"action": action, "after_seq": str(after)})
        ).json()
        found += page["items"]
        if not page["items"]:
            return found
        after = page["last_seq"]


# httpx leaves the request body's async generator of a request cut by the kill to the garbage
# collector (a ResourceWarning); that is the client's business, not what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_kill_9_leaves_no_change_without_its_entry(tmp_path: Path, database: str) -> None:
    data = tmp_path / "labd"
    port = free_port()
    admin: Credentials | None = None
    with trio.fail_after(400):
        for round_ in range(ROUNDS):
            async with labd_process(data, port, database) as proc:
                admin = admin or await setup(data, port)
                answered = await load_until_killed(data, port, admin, proc, round_)
                assert await proc.wait() == -signal.SIGKILL
            assert answered >= KILL_AFTER
        assert admin is not None

        async with labd_process(data, port, database), client(data, port, admin) as http:
            tokens = (await http.get("/api/tokens")).json()["items"]
            labels = (await http.get(f"/api/servers/{SERVER}")).json()["labels"]
            created = await audit_entries(http, "tokens:create")
            labelled = await audit_entries(http, "servers:label")
            verdict = (await http.get("/api/audit/verify")).json()

    # Each load token carries its request id as description; its entry names the request.
    audited_tokens = {e["details"].get("request_id") for e in created if e["result"] == "success"}
    made_by_load = [t["description"] for t in tokens if t["description"].startswith("w")]
    missing = sorted(set(made_by_load) - audited_tokens)
    assert len(made_by_load) > 2
    assert not missing, f"{len(missing)} tokens without an audit entry: {missing[:5]}"
    audited_values = {
        (key, value)
        for e in labelled
        if e["result"] == "success"
        for key, value in e["details"].get("set", {}).items()
    }
    unaudited = sorted(set(labels.items()) - audited_values)
    assert labels and not unaudited, f"label values without an audit entry: {unaudited}"
    assert verdict["ok"] is True, verdict


async def in_own_context(fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn`` in a task of its own: a pending entry is per context, like per request."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fn)


async def test_the_store_commits_a_change_with_its_entry_or_neither(database: str) -> None:
    async with open_store(database, audit_key=KEY) as store:
        await store.audit.start_chain()

        async def change_and_entry() -> None:
            pending = audit_next_change(lambda: AuditEntry(action="roles:create", resource="r/x"))
            await store.roles.get("admin")  # a read carries nothing
            assert pending.stored is None
            await store.roles.upsert(Role(name="x"))
            assert pending.stored is not None and pending.stored.seq == 1
            await store.roles.upsert(Role(name="y"))  # the request's entry is already in
            assert await store.audit.last_seq() == 1

        async def entry_that_cannot_be_written() -> None:
            naive = datetime(2026, 1, 1)
            pending = audit_next_change(lambda: AuditEntry(time=naive, action="roles:create"))
            with pytest.raises(Unavailable) as refused:
                await store.roles.upsert(Role(name="z"))
            assert refused.value.details["reason"] == "audit_unavailable"
            assert pending.stored is None

        async def change_that_fails() -> None:
            pending = audit_next_change(lambda: AuditEntry(action="roles:delete"))
            with pytest.raises(Conflict):
                await store.roles.delete("admin")  # builtin: refused
            assert pending.stored is None

        with trio.fail_after(60):
            await in_own_context(change_and_entry)
            await in_own_context(entry_that_cannot_be_written)
            await in_own_context(change_that_fails)
            with pytest.raises(NotFound):
                await store.roles.get("z")
            entries = await store.audit.list()
            # The chain goes on after the refused entry: the head was re-read.
            after = await store.audit.append(AuditEntry(action="x"))
    assert [(e.seq, e.action) for e in entries] == [(1, "roles:create")]
    assert after.seq == 2 and after.prev_hash == entries[0].hash
    assert verify_chain([*entries, after], key=KEY) is None
