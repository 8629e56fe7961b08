"""labd's and the bastion's SQLite files are private (0600), and labd warns about a data dir
that other users can read (they were 0644 and a 0755 data dir drew no warning)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
import trio

from lab.store import open_store
from tests.bastion.conftest import start_bastion
from tests.labd.harness import running_labd


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def db_files(db: Path) -> list[Path]:
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    assert all(f.exists() for f in files), [f.name for f in files if not f.exists()]
    return files


async def test_labd_database_files_are_private_and_an_open_data_dir_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "labd"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    caplog.set_level(logging.WARNING)
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await labd.create_token(admin, "agent")  # writes through the WAL
            files = db_files(data / "labd.db")
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(data) in m and "0755" in m for m in warnings), warnings


async def test_a_private_data_dir_draws_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(60):
        async with running_labd(tmp_path):
            pass
    assert not [r for r in caplog.records if "data dir" in r.getMessage()]


async def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with trio.fail_after(30):
        async with open_store(f"sqlite:///{db}") as first:
            await first.settings.set("k", "v")
            for f in db_files(db):  # as an older labctl left them
                f.chmod(0o644)
            async with open_store(f"sqlite:///{db}") as second:
                await second.settings.set("k", "w")
                assert [mode(f) for f in db_files(db)] == [0o600, 0o600, 0o600]


async def test_bastion_database_files_are_private(nursery: trio.Nursery, tmp_path: Path) -> None:
    async for running in start_bastion(nursery, tmp_path):
        await running.install("52:54:00:12:34:56")  # a write, whatever the answer
        files = db_files(running.data_dir / "bastion.db")
        assert [mode(f) for f in files] == [0o600, 0o600, 0o600]
