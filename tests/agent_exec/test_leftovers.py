"""lab.agent.leftovers: only a recorded process that is still the same process is killed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.agent.leftovers import Ledger, start_time


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_recorded_command_is_killed_with_its_group(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    ledger = Ledger(tmp_path)
    ledger.record(sleeper.pid)
    assert (tmp_path / "running" / str(sleeper.pid)).read_text() == start_time(sleeper.pid)
    assert Ledger(tmp_path).kill_leftovers() == [sleeper.pid]
    assert sleeper.wait(timeout=30) == -9
    assert list((tmp_path / "running").iterdir()) == []


def test_a_recycled_pid_is_left_alone(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """Same pid, another start time: another process that got the number; never touched."""
    (tmp_path / "running").mkdir()
    started = start_time(sleeper.pid)
    assert started is not None
    (tmp_path / "running" / str(sleeper.pid)).write_text(str(int(started) - 1))
    assert Ledger(tmp_path).kill_leftovers() == []
    assert sleeper.poll() is None
    assert list((tmp_path / "running").iterdir()) == []


def test_forgotten_gone_and_odd_entries(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    ledger = Ledger(tmp_path)
    assert ledger.kill_leftovers() == []  # no folder yet
    ledger.record(sleeper.pid)
    ledger.forget(sleeper.pid)
    ledger.forget(sleeper.pid)  # twice is fine
    folder = tmp_path / "running"
    (folder / "not-a-pid").write_text("1")
    (folder / "999999999").write_text("1")  # no such process
    (folder / "1").write_text("")  # an empty record never matches (and pid 1 is never killed)
    assert ledger.kill_leftovers() == []
    assert sleeper.poll() is None
    assert list(folder.iterdir()) == []


def test_start_time_reads_past_a_name_with_parentheses(tmp_path: Path) -> None:
    odd = tmp_path / "a) (b"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "600"])
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        assert "(a) (b)" in stat
        assert start_time(proc.pid) == stat.rsplit(")", 1)[1].split()[19]
    finally:
        proc.kill()
        proc.wait()
    assert start_time(proc.pid) is None


def test_a_state_dir_that_cannot_be_written_does_not_fail_the_command(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "running").write_text("a file where the folder belongs")
    Ledger(tmp_path).record(sleeper.pid)  # logs, does not raise
    assert "cannot note running command" in caplog.text
    assert sleeper.poll() is None
