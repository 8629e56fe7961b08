"""PID files: a stale or foreign pid is reported and removed, never signalled; a running
daemon holds its file's lock (lab.runtime.pidfile, labctl init ... standalone)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab.errors import Conflict
from lab.local.daemonize import start_background, stop_background
from lab.runtime.pidfile import hold, inspect, is_locked, start_time
from tests.e2e.procs import clean_env, labctl, pid_alive


@contextmanager
def bystander(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process that is none of ours, killed at the end whatever happened."""
    proc = subprocess.Popen(list(argv))
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("daemon", "pid_name", "env_var"),
    [("agent", "lab-agent.pid", "LAB_AGENT_STATE_DIR"), ("labd", "labd.pid", "LABD_DATA_DIR")],
)
def test_stop_leaves_an_unrelated_sleep_alive(
    tmp_path: Path, daemon: str, pid_name: str, env_var: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    env = clean_env(**{env_var: str(state), "LABCTL_HOME": str(tmp_path / "home")})
    with bystander("sleep", "1000") as sleep:
        (state / pid_name).write_text(f"{sleep.pid}\n")
        res = labctl("init", daemon, "standalone", "stop", env=env)
        assert res.returncode == 0, res.stderr
        assert "is not running" in res.stdout
        assert f"removed foreign pid file {state / pid_name}" in res.stderr
        assert f"pid {sleep.pid} is not ours: sleep 1000" in res.stderr
        assert not (state / pid_name).exists()
        assert sleep.poll() is None and pid_alive(sleep.pid)


def test_a_namesake_without_the_lock_or_with_another_start_time_is_stale(tmp_path: Path) -> None:
    pid_file = tmp_path / "lab-agent.pid"
    # Its command line names lab-agent, but it never took the lock: not the agent.
    code = "import time; time.sleep(1000)"
    with bystander(sys.executable, "-c", code, "lab-agent") as namesake:
        pid_file.write_text(f"{namesake.pid}\n")
        status = inspect(pid_file, ("lab-agent",))
        assert (status.state, status.pid) == ("stale", namesake.pid)
        assert "lock" in status.reason
        # The pid was reused: the start time in the file is not the process's.
        wrong = (start_time(namesake.pid) or 0) + 1
        pid_file.write_text(f"{namesake.pid} {wrong}\n")
        assert inspect(pid_file, ("lab-agent",)).reason.endswith("is another process now")
        stopped = stop_background(pid_file, ("lab-agent",), timeout=5)
        assert stopped is None
        assert namesake.poll() is None
        assert not pid_file.exists()


# start_background leaves its child running on purpose; Popen warns when it is collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_background_child_holds_the_lock_until_it_exits(tmp_path: Path) -> None:
    pid_file, log_file = tmp_path / "sleeper.pid", tmp_path / "sleeper.log"
    env = clean_env()
    pid = start_background(
        ["sleep", "1000"], pid_file=pid_file, log_file=log_file, env=env, programs=("sleep",)
    )
    try:
        status = inspect(pid_file, ("sleep",))
        assert (status.state, status.pid) == ("running", pid)
        assert is_locked(pid_file)
        assert pid_file.read_text().split() == [str(pid), str(start_time(pid))]
        with pytest.raises(Conflict):
            start_background(
                ["sleep", "1000"],
                pid_file=pid_file,
                log_file=log_file,
                env=env,
                programs=("sleep",),
            )
        assert stop_background(pid_file, ("sleep",), timeout=10) == pid
        assert not pid_file.exists()
    finally:
        if pid_alive(pid):
            subprocess.run(["kill", "-9", str(pid)], check=False)
    assert not pid_alive(pid)


def test_a_daemon_holding_its_pid_file_keeps_a_second_one_out(tmp_path: Path) -> None:
    pid_file = tmp_path / "state" / "lab-agent.pid"
    with hold(pid_file):
        assert is_locked(pid_file)
        with pytest.raises(Conflict, match="already running"), hold(pid_file):
            pass
        assert inspect(pid_file, ("python", "python3", sys.executable.rsplit("/", 1)[-1])).running
    assert not pid_file.exists()
    assert not is_locked(pid_file)
