"""Signed audit checkpoints without a labd: what is signed, what a forged or broken line says,
the file's lines and mode, and the checkpointer's writes on a real SQLite store."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trio

from lab import pki
from lab.errors import Invalid
from lab.labd.audit.checkpoints import (
    CHECKPOINT_FILE,
    Checkpointer,
    CheckpointLog,
    make_checkpoint,
    parse_checkpoint,
    verify_log,
)
from lab.labd.audit.keys import AuditKeys
from lab.model import AuditEntry
from lab.store import open_store
from lab.store.auditchain import START_SETTING, AuditKey
from lab.store.auditverify import Checkpoint

KEY = AuditKey(b"labctl checkpoint test key, 32 b")
KEYS = AuditKeys(chain=KEY, signer=pki.Signer(KEY.derive(b"checkpoint signing key")))
OTHER = pki.Signer(b"o" * 32)
AT = datetime(2026, 11, 1, 13, 30, tzinfo=timezone(timedelta(hours=1, minutes=30)))


def made(**fields: Any) -> dict[str, Any]:
    return make_checkpoint(
        KEYS, **{"seq": 7, "head": "ab" * 32, "chain_from": 1, "at": AT, **fields}
    )


def test_a_checkpoint_signs_its_canonical_fields() -> None:
    cp = made()
    assert {k: v for k, v in cp.items() if k != "sig"} == {
        "v": 1,
        "seq": 7,
        "head": "ab" * 32,
        "chain_from": 1,
        "key_id": KEY.key_id,
        "time": "2026-11-01T12:00:00.000000+00:00",
    }
    signed = (
        f'{{"chain_from":1,"head":"{"ab" * 32}","key_id":"{KEY.key_id}","seq":7,'
        '"time":"2026-11-01T12:00:00.000000+00:00","v":1}'
    ).encode()
    sig = base64.b64decode(cp["sig"], validate=True)
    assert pki.signature_holds(KEYS.signer.public_key, signed, sig)
    assert KEYS.signer.public_key != OTHER.public_key


def test_parse_a_good_checkpoint() -> None:
    cp = parse_checkpoint(made(), KEYS.signer.public_key, source="w.json")
    assert cp == Checkpoint(
        seq=7,
        head="ab" * 32,
        chain_from=1,
        key_id=KEY.key_id,
        time="2026-11-01T12:00:00.000000+00:00",
        source="w.json",
    )


@pytest.mark.parametrize("field", ["v", "seq", "head", "chain_from", "key_id", "time"])
def test_any_edited_field_breaks_the_signature(field: str) -> None:
    cp = made()
    cp[field] = cp[field] + 1 if isinstance(cp[field], int) else cp[field] + "0"
    with pytest.raises(Invalid) as info:
        parse_checkpoint(cp, KEYS.signer.public_key, source="w.json")
    assert info.value.message == (
        "checkpoint w.json does not carry labd's signature (forged or edited)"
    )


def test_a_signature_with_stray_characters_is_malformed() -> None:
    cp = made()
    cp["sig"] = "!" + cp["sig"]
    with pytest.raises(Invalid, match=r"^checkpoint w\.json is malformed: "):
        parse_checkpoint(cp, KEYS.signer.public_key, source="w.json")


def test_a_checkpoint_signed_by_another_key() -> None:
    with pytest.raises(Invalid, match="forged or edited"):
        parse_checkpoint(made(), OTHER.public_key, source="w.json")


@pytest.mark.parametrize(
    "change",
    [
        {"sig": "not base64!"},
        {"seq": "seven"},
        {"chain_from": None},
        {"sig": "abc"},
    ],
)
def test_malformed_checkpoints(change: dict[str, Any]) -> None:
    with pytest.raises(Invalid, match=r"^checkpoint w\.json is malformed: "):
        parse_checkpoint({**made(), **change}, KEYS.signer.public_key, source="w.json")


@pytest.mark.parametrize("missing", ["v", "seq", "head", "chain_from", "key_id", "time", "sig"])
def test_a_checkpoint_missing_a_field(missing: str) -> None:
    cp = made()
    del cp[missing]
    with pytest.raises(Invalid, match=r"^checkpoint w\.json is malformed: "):
        parse_checkpoint(cp, KEYS.signer.public_key, source="w.json")


@pytest.mark.parametrize("data", [[], "x", 7, None])
def test_a_checkpoint_that_is_not_an_object(data: Any) -> None:
    with pytest.raises(Invalid) as info:
        parse_checkpoint(data, KEYS.signer.public_key, source="w.json")
    assert info.value.message == "checkpoint w.json is not a JSON object"


def test_the_checkpoint_file(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path, KEYS)
    assert log.path == tmp_path / CHECKPOINT_FILE
    assert log.read() == ([], []) and log.last() is None
    first, second = made(seq=1), made(seq=2)
    log.append(first)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    log.append(second)
    lines = log.path.read_text().splitlines()
    assert lines == [json.dumps(c, sort_keys=True, separators=(",", ":")) for c in (first, second)]
    good, bad = log.read()
    assert [(c.seq, c.source) for c in good] == [
        (1, f"{CHECKPOINT_FILE}:1"),
        (2, f"{CHECKPOINT_FILE}:2"),
    ]
    assert bad == []
    assert log.last() == second

    forged = {**made(seq=3), "head": "00"}
    with log.path.open("a") as f:
        f.write("\n{broken\n" + json.dumps(forged) + "\n[1]\n")
    good, bad = log.read()
    assert [c.seq for c in good] == [1, 2]
    assert bad == [
        f"checkpoint {CHECKPOINT_FILE}:4 is not JSON",
        f"checkpoint {CHECKPOINT_FILE}:5 does not carry labd's signature (forged or edited)",
        f"checkpoint {CHECKPOINT_FILE}:6 is not a JSON object",
    ]
    assert log.last() == forged  # the newest object as written; the list line is skipped
    with log.path.open("a") as f:
        f.write("{torn write\n")
    assert log.last() == forged


async def test_the_checkpointer_writes_only_a_new_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(30):
        async with open_store(f"sqlite:///{tmp_path / 'lab.db'}", audit_key=KEY) as store:
            log = CheckpointLog(tmp_path, KEYS)
            writer = Checkpointer(store, log, every=0)
            await store.settings.set(START_SETTING, "pending")
            assert writer.latest is None
            assert await writer.write() is None  # no keyed chain yet: nothing to vouch for
            assert caplog.record_tuples == [
                (
                    "lab.labd.audit.checkpoints",
                    logging.ERROR,
                    "audit chain start record missing: no checkpoint written",
                )
            ]
            assert (writer.written, log.read()) == (0, ([], []))
            start = await store.audit.start_chain()
            first = await store.audit.append(AuditEntry(action="servers:get"))
            cp = await writer.write()
            assert cp is not None and (cp["seq"], cp["head"]) == (1, first.hash)
            assert writer.latest == cp == log.last()
            assert Checkpointer(store, log, every=0).latest == cp  # read back at start
            assert cp["chain_from"] == start.from_seq == 1
            assert await writer.write() is None
            second = await store.audit.append(AuditEntry(action="servers:get"))
            cp = await writer.write()
            assert cp is not None and (cp["seq"], cp["head"]) == (2, second.hash)
            assert writer.written == 2 and writer.latest == cp
            # the same length with another head (rewritten in place) is a new checkpoint
            raw = sqlite3.connect(tmp_path / "lab.db")
            with raw:
                raw.execute("UPDATE audit SET hash = 'ff' WHERE seq = 2")
            raw.close()
            cp = await writer.write()
            assert cp is not None and (cp["seq"], cp["head"]) == (2, "ff")
            raw = sqlite3.connect(tmp_path / "lab.db")
            with raw:
                raw.execute("UPDATE audit SET hash = ? WHERE seq = 2", (second.hash,))
            raw.close()
            assert (await writer.write() or {}).get("head") == second.hash
            assert writer.written == 4
            await writer.wait_written(4)
            assert [c.seq for c in log.read()[0]] == [1, 2, 2, 2]

            # the checkpoint of the rewritten head disagrees with the entry now in place
            verdict, count = await verify_log(store, KEYS, log, [])
            assert (verdict.kind, verdict.checked, verdict.broken_at, count) == (
                "rewritten",
                1,
                2,
                4,
            )
            witness = parse_checkpoint(cp, KEYS.signer.public_key, source="witness")
            verdict, count = await verify_log(store, KEYS, log, [witness])
            assert (verdict.kind, count) == ("rewritten", 5)

            with log.path.open("a") as f:
                f.write("{broken\n")
            verdict, count = await verify_log(store, KEYS, log, [witness])
            assert (verdict.kind, verdict.reason, count) == (
                "bad_checkpoint",
                f"checkpoint {CHECKPOINT_FILE}:5 is not JSON",
                5,
            )
            assert (verdict.checked, verdict.last_seq, verdict.head) == (0, 0, "")
