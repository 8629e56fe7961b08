"""Start, stop and inspect a background daemon through a pid file (no shell involved)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lab.errors import Conflict, Unavailable


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None (a stale file is removed)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return None
    except PermissionError:
        return pid
    return pid


def start_background(
    argv: Sequence[str], *, pid_file: Path, log_file: Path, env: Mapping[str, str]
) -> int:
    """Start ``argv`` detached with output to ``log_file``; Conflict if already running."""
    running = read_pid(pid_file)
    if running is not None:
        raise Conflict(
            f"already running (pid {running})", details={"hint": "stop it first, or run status"}
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def exited_early(pid: int) -> int | None:
    """The exit status if our child ``pid`` has already exited (reaps it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def stop_background(pid_file: Path, *, timeout: float = 15.0) -> int | None:
    """SIGTERM the process of ``pid_file``, SIGKILL after ``timeout``; returns its pid."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); a process we did not start is reaped by its parent.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def require_started(pid: int, log_file: Path) -> None:
    code = exited_early(pid)
    if code is not None:
        tail = (
            log_file.read_text(errors="replace").strip().splitlines()[-1:]
            if log_file.exists()
            else []
        )
        raise Unavailable(
            f"exited with status {code}" + (f": {tail[0]}" if tail else ""),
            details={"hint": f"see {log_file}"},
        )
