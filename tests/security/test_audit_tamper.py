"""Someone who can write labd's database but holds no key rewrites the audit log; after a
restart, ``/api/audit/verify`` says the log was tampered with, and how.

Each case runs a real labd (SQLite file, then PostgreSQL), makes audited requests, stops it
(labd writes its shutdown checkpoint), tampers with the audit table by raw SQL and the public,
keyless chain function, starts labd again and asks for the verdict. With the keyless chain all
but the in-place edit and delete passed ``audit verify``.
"""

# ruff: noqa: F811 -- the database fixture is imported from audit_rig and requested by name.

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

from lab import pki
from lab.agent.daemon import run_agent
from lab.bastion.labd_link import join, open_labd_link
from lab.cli.audit_cmd import read_witnesses
from lab.labd.config import LabdConfig
from lab.labd.context import LabdContext
from lab.labd.server import serve_labd
from lab.model import AuditEntry
from lab.runtime.witness import WITNESS_FILE, keep
from lab.store import open_store
from lab.store.auditchain import chain
from tests.hub.hubtools import enroll_state, labd_with_hub
from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.security.audit_rig import Attacker, database, pg  # noqa: F401 (fixtures)

ROLES = 12
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def make_history(tmp_path: Path, url: str) -> Credentials:
    """A labd with ``ROLES`` roles created and revoked certificates: ~30 audited requests."""
    async with running_labd(tmp_path, database_url=url, audit_checkpoint_every=0) as labd:
        admin = await labd.admin()
        async with labd.client(admin) as http:
            for i in range(ROLES):
                resp = await http.post("/api/roles", json={"name": f"team-{i}"})
                assert resp.status_code == 201, resp.text
            for _ in range(7):
                resp = await http.post("/api/certs/revoke", json={"target": "server/ghost"})
                assert resp.status_code in (200, 404), resp.text
            verdict = (await http.get("/api/audit/verify")).json()
            assert verdict["ok"] is True and verdict["kind"] == "ok", verdict
    return admin


async def verdict_after_restart(tmp_path: Path, url: str, admin: Credentials) -> dict[str, Any]:
    async with running_labd(tmp_path, database_url=url) as labd, labd.client(admin) as http:
        resp = await http.get("/api/audit/verify")
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        return answer


async def seqs_of(attacker: Attacker, action: str) -> list[int]:
    return [e.seq for e in await attacker.entries() if e.action == action]


async def test_edited_rows_rechained_without_the_key_are_named(
    tmp_path: Path, database: str
) -> None:
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        attacker = Attacker(database)
        edited = await seqs_of(attacker, "roles:create")
        assert len(edited) == ROLES
        attacker.executemany(
            "UPDATE audit SET \"user\" = 'user/someone-else' WHERE seq = ?", [(s,) for s in edited]
        )
        await attacker.rechain_from(edited[0])
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert verdict["ok"] is False
    assert (verdict["kind"], verdict["broken_at"]) == ("rechained", edited[0])
    assert "without the key" in verdict["reason"]


async def test_deleted_rows_renumbered_and_rechained_are_named(
    tmp_path: Path, database: str
) -> None:
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        attacker = Attacker(database)
        revokes = await seqs_of(attacker, "certs:revoke")
        assert len(revokes) == 7
        attacker.executemany("DELETE FROM audit WHERE seq = ?", [(s,) for s in revokes])
        first = await attacker.renumber()
        await attacker.rechain_from(first)
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert (verdict["kind"], verdict["broken_at"]) == ("rechained", revokes[0])


async def test_rows_deleted_in_place_are_named(tmp_path: Path, database: str) -> None:
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        attacker = Attacker(database)
        revokes = await seqs_of(attacker, "certs:revoke")
        attacker.execute("DELETE FROM audit WHERE seq = ?", (revokes[2],))
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert (verdict["kind"], verdict["broken_at"]) == ("deleted", revokes[2] + 1)


async def test_an_edit_in_place_is_named(tmp_path: Path, database: str) -> None:
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        attacker = Attacker(database)
        target = (await seqs_of(attacker, "roles:create"))[3]
        attacker.execute("UPDATE audit SET resource = 'role/x' WHERE seq = ?", (target,))
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert (verdict["kind"], verdict["broken_at"]) == ("edited", target)


async def test_a_forged_entry_chained_with_the_public_function_is_named(
    tmp_path: Path, database: str
) -> None:
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        attacker = Attacker(database)
        entries = await attacker.entries()
        last = entries[-1]
        forged = chain(
            AuditEntry(time=last.time, user="user/admin", action="users:list"),
            last.seq + 1,
            last.hash,
        )
        attacker.execute(
            'INSERT INTO audit (seq, time, "user", session, action, resource, result,'
            " duration_ms, source, details, prev_hash, hash)"
            " VALUES (?, ?, ?, '', ?, '', 'success', 0, '', '{}', ?, ?)",
            (
                forged.seq,
                last.time.isoformat(timespec="microseconds"),
                forged.user,
                forged.action,
                forged.prev_hash,
                forged.hash,
            ),
        )
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert (verdict["kind"], verdict["broken_at"]) == ("rechained", last.seq + 1)


async def test_a_truncated_tail_is_named(tmp_path: Path, database: str) -> None:
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        attacker = Attacker(database)
        last = (await attacker.entries())[-1].seq
        attacker.execute("DELETE FROM audit WHERE seq > ?", (last - 5,))
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert (verdict["kind"], verdict["broken_at"]) == ("truncated", last - 4)
    assert f"recorded #{last}" in verdict["reason"]


async def test_a_wiped_table_is_named(tmp_path: Path, database: str) -> None:
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        Attacker(database).execute("DELETE FROM audit")
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert verdict["kind"] == "wiped" and verdict["checked"] == 0, verdict


async def test_a_reset_start_record_is_named(tmp_path: Path, database: str) -> None:
    """Resetting the chain start to 'pending' would let labd start a new keyed chain after
    re-chained rows; the checkpoints remember where the keyed chain started."""
    with trio.fail_after(120):
        admin = await make_history(tmp_path, database)
        attacker = Attacker(database)
        await attacker.rechain_from(1)
        attacker.execute("UPDATE settings SET value = 'pending' WHERE key = 'audit_chain'")
        verdict = await verdict_after_restart(tmp_path, database, admin)
    assert verdict["kind"] == "rewritten", verdict
    assert "keyed chain starts at" in verdict["reason"]


async def witness_of(labd: RunningLabd, admin: Credentials) -> dict[str, Any]:
    async with labd.client(admin) as http:
        answer: dict[str, Any] = (await http.get("/api/audit/checkpoint")).json()
    return answer


async def test_a_witness_checkpoint_catches_a_truncation_the_file_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'labd' / 'labd.db'}"
    with trio.fail_after(120):
        admin = await make_history(tmp_path, url)
        async with running_labd(tmp_path, database_url=url) as labd:
            kept = await witness_of(labd, admin)
        cp = kept["checkpoint"]
        signed = {k: cp[k] for k in ("v", "seq", "head", "chain_from", "key_id", "time")}
        assert pki.signature_holds(
            base64.b64decode(kept["public_key"]),
            json.dumps(signed, sort_keys=True, separators=(",", ":")).encode(),
            base64.b64decode(cp["sig"]),
        )
        # The attacker also holds the data dir: the checkpoint file goes too.
        (tmp_path / "labd" / "audit-checkpoints.jsonl").unlink()
        Attacker(url).execute("DELETE FROM audit WHERE seq > ?", (cp["seq"] - 3,))
        async with running_labd(tmp_path, database_url=url) as labd, labd.client(admin) as http:
            blind = (await http.get("/api/audit/verify")).json()
            seen = (await http.post("/api/audit/verify", json={"checkpoints": [cp]})).json()
            forged = {**cp, "seq": cp["seq"] - 5}
            bad = (await http.post("/api/audit/verify", json={"checkpoints": [forged]})).json()
            junk = await http.post("/api/audit/verify", json={"checkpoints": "x"})
    assert blind["ok"] is True  # nothing left in labd's reach shows it ...
    # ... the witness does (the blind verify above added one entry since the cut).
    assert seen["kind"] == "truncated" and f"recorded #{cp['seq']}" in seen["reason"], seen
    assert bad["kind"] == "bad_checkpoint" and "signature" in bad["reason"]
    assert junk.status_code == 400
    assert junk.json()["error"]["details"]["fields"] == ["body.checkpoints"]


async def test_legacy_entries_stay_verifiable_and_anchored(tmp_path: Path) -> None:
    """A database from before the keyed chain: its plain-hash rows verify as legacy, the keyed
    chain starts after them, and re-chaining them later is caught."""
    url = f"sqlite:///{tmp_path / 'labd' / 'labd.db'}"
    (tmp_path / "labd").mkdir(mode=0o700)
    async with open_store(url):  # migrated, no key: the chain start is still 'pending'
        pass
    attacker = Attacker(url)  # here: the old labd, writing keyless rows
    prev = ""
    rows = []
    for seq in range(1, 6):
        old = chain(AuditEntry(time=T0, user="user/old", action="users:list"), seq, prev)
        rows.append((seq, old.time.isoformat(timespec="microseconds"), old.prev_hash, old.hash))
        prev = old.hash
    attacker.executemany(
        'INSERT INTO audit (seq, time, "user", session, action, resource, result, duration_ms,'
        " source, details, prev_hash, hash)"
        " VALUES (?, ?, 'user/old', '', 'users:list', '', 'success', 0.0, '', '{}', ?, ?)",
        rows,
    )
    with trio.fail_after(120):
        async with running_labd(tmp_path, database_url=url) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                ok = (await http.get("/api/audit/verify")).json()
        assert ok["ok"] is True and ok["legacy"] == 5 and ok["checked"] >= 6, ok
        await attacker.rechain_from(1)  # no-op on intact rows: the plain chain still holds
        attacker.execute("UPDATE audit SET \"user\" = 'user/x' WHERE seq = 2")
        await attacker.rechain_from(2)
        verdict = await verdict_after_restart(tmp_path, url, admin)
    assert verdict["kind"] == "rechained" and verdict["broken_at"] == 6, verdict
    assert verdict["legacy"] == 5


async def test_checkpoints_are_written_every_n_entries_signed_and_private(tmp_path: Path) -> None:
    config = LabdConfig(
        host="127.0.0.1",
        port=0,
        data_dir=str(tmp_path / "labd"),
        enroll_rate=0,
        rate_global=0,
        rate_tokens=0,
        audit_checkpoint_every=5,
    )
    contexts: list[LabdContext] = []
    shutdown = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                partial(serve_labd, config, shutdown=shutdown, on_context=contexts.append)
            )
            labd = RunningLabd(config=config, host=host, port=port, shutdown=shutdown)
            admin = await labd.admin()
            checkpointer = contexts[0].checkpointer
            async with labd.client(admin) as http:
                for batch in (1, 2):
                    for i in range(6):
                        resp = await http.post("/api/roles", json={"name": f"r{batch}-{i}"})
                        assert resp.is_success
                    await checkpointer.wait_written(batch)
            shutdown.set()
    path = tmp_path / "labd" / "audit-checkpoints.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    seqs = [cp["seq"] for cp in lines]
    # Every 5 entries or more (looked at once a second); the last one is the final head.
    assert len(lines) >= 2 and seqs == sorted(seqs) and seqs[-1] == 13 and seqs[0] >= 5
    keys = contexts[0].audit_keys
    for cp in lines:
        signed = {k: cp[k] for k in ("v", "seq", "head", "chain_from", "key_id", "time")}
        body = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
        assert pki.signature_holds(keys.signer.public_key, body, base64.b64decode(cp["sig"]))
        assert cp["key_id"] == keys.key_id and cp["chain_from"] == 1


async def test_an_agent_witness_catches_a_truncation_labd_cannot_see(tmp_path: Path) -> None:
    """The agent keeps labd's newest checkpoint in its state dir; after the tail of the log and
    labd's own checkpoint file are gone, the agent's copy still shows the cut."""
    state = tmp_path / "agent"
    with trio.fail_after(120):
        async with labd_with_hub(tmp_path, audit_checkpoint_every=3) as labd:
            admin = await labd.running.admin()
            async with labd.running.client(admin) as http:
                for i in range(6):
                    assert (await http.post("/api/roles", json={"name": f"w{i}"})).is_success
            await labd.context.checkpointer.wait_written(1)
            settings = await enroll_state(
                labd.running, admin, "w1", state, audit_witness_interval=0.5
            )
            async with trio.open_nursery() as nursery:
                stop = trio.Event()
                agent = await nursery.start(partial(run_agent, settings, shutdown=stop))
                await agent.wait_witnessed(1)
                stop.set()
        kept = json.loads((state / WITNESS_FILE).read_text())
        assert stat.S_IMODE((state / WITNESS_FILE).stat().st_mode) == 0o600
        seq = kept["checkpoint"]["seq"]
        assert seq >= 3
        # Someone with the database and labd's data dir cuts the tail and the checkpoint file.
        url = f"sqlite:///{tmp_path / 'labd' / 'labd.db'}"
        (tmp_path / "labd" / "audit-checkpoints.jsonl").unlink()
        Attacker(url).execute("DELETE FROM audit WHERE seq > ?", (seq - 2,))
        async with running_labd(tmp_path) as again, again.client(admin) as http:
            blind = (await http.get("/api/audit/verify")).json()
            witnesses = read_witnesses([str(state / WITNESS_FILE)])
            seen = (await http.post("/api/audit/verify", json={"checkpoints": witnesses})).json()
    assert blind["ok"] is True
    assert seen["kind"] == "truncated" and f"recorded #{seq}" in seen["reason"], seen
    # A checkpoint that goes backwards is not kept: the agent holds on to the newer one.
    older = {**kept, "checkpoint": {**kept["checkpoint"], "seq": seq - 1}}
    assert keep(state, older) is False
    assert json.loads((state / WITNESS_FILE).read_text()) == kept


async def test_a_joined_bastion_keeps_labds_newest_checkpoint(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path, audit_checkpoint_every=2) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "user", user="pxe1", roles=["admin"])
            fingerprint = pki.load_ca_bundle(labd.ca_pem())[0].fingerprint()
            link = await join(
                tmp_path / "bastion",
                labd.url,
                token,
                name="pxe1",
                ca_fingerprint=fingerprint,
                tofu=False,
            )
            async with labd.client(admin) as http:
                for i in range(4):
                    assert (await http.post("/api/roles", json={"name": f"b{i}"})).is_success
            kept = trio.Event()
            async with open_labd_link(link) as source, trio.open_nursery() as nursery:
                nursery.start_soon(partial(source.run_witness, 0.2, stored=kept.set))
                await kept.wait()
                nursery.cancel_scope.cancel()
    answer = json.loads((link.directory / WITNESS_FILE).read_text())
    cp = answer["checkpoint"]
    assert cp["seq"] >= 2 and cp["key_id"] == answer["key_id"]
    signed = {k: cp[k] for k in ("v", "seq", "head", "chain_from", "key_id", "time")}
    body = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    assert pki.signature_holds(
        base64.b64decode(answer["public_key"]), body, base64.b64decode(cp["sig"])
    )
