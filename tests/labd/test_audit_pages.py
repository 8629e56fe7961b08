"""``audit verify`` walks the log a page at a time: with a page of 3 entries, a log of 10 is
checked across four pages, and a break on a later page, a deleted page boundary or a cut tail is
still found and named. Real SQLite file, no labd process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from lab import pki
from lab.labd.audit import checkpoints
from lab.labd.audit.checkpoints import Checkpointer, CheckpointLog, verify_log
from lab.labd.audit.keys import AuditKeys
from lab.model import AuditEntry
from lab.store import open_store
from lab.store.auditchain import AuditKey

KEY = AuditKey(b"labctl audit paging test key 32b")
KEYS = AuditKeys(chain=KEY, signer=pki.Signer(KEY.derive(b"checkpoint signing key")))


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "VERIFY_PAGE", 3)


async def write_log(tmp_path: Path, n: int) -> str:
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    async with open_store(url, audit_key=KEY) as store:
        await store.audit.start_chain()  # as labd does when it starts
        for i in range(n):
            await store.audit.append(AuditEntry(action="servers:get", details={"i": i}))
        await Checkpointer(store, CheckpointLog(tmp_path, KEYS), every=0).write()
    return url


def raw(url: str, sql: str) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        with conn:
            conn.execute(sql)
    finally:
        conn.close()


async def verdict(tmp_path: Path, url: str) -> tuple[str, int, int | None, int]:
    async with open_store(url, audit_key=KEY) as store:
        v, n = await verify_log(store, KEYS, CheckpointLog(tmp_path, KEYS), [])
    assert n == 1  # the one checkpoint written after the log
    return v.kind, v.checked, v.broken_at, v.last_seq


async def test_an_intact_log_over_four_pages(tmp_path: Path) -> None:
    with trio.fail_after(30):
        url = await write_log(tmp_path, 10)
        assert await verdict(tmp_path, url) == ("ok", 10, None, 10)


async def test_an_edit_on_the_last_page(tmp_path: Path) -> None:
    with trio.fail_after(30):
        url = await write_log(tmp_path, 10)
        raw(url, "UPDATE audit SET resource = 'server/x' WHERE seq = 10")
        assert await verdict(tmp_path, url) == ("edited", 9, 10, 9)


async def test_a_deleted_page_boundary(tmp_path: Path) -> None:
    with trio.fail_after(30):
        url = await write_log(tmp_path, 10)
        raw(url, "DELETE FROM audit WHERE seq IN (6, 7)")
        assert await verdict(tmp_path, url) == ("deleted", 5, 8, 5)


async def test_a_cut_tail_is_truncated_against_the_checkpoint(tmp_path: Path) -> None:
    with trio.fail_after(30):
        url = await write_log(tmp_path, 10)
        raw(url, "DELETE FROM audit WHERE seq > 6")
        assert await verdict(tmp_path, url) == ("truncated", 6, 7, 6)
