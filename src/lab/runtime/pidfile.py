"""PID files that cannot make us signal a stranger.

A pid file holds ``PID START`` (START is the process start time from ``/proc/PID/stat``, in
clock ticks since boot) and is ``flock``-ed for as long as the daemon runs: by the daemon
itself (:func:`hold`), or, for a daemon that ``labctl init ... standalone`` starts, by the
starter, which hands the locked descriptor down to the child (:func:`lock_for_child`; the
child keeps the lock until it exits and finds the descriptor in ``LAB_PID_FILE_FD``).

Before anyone signals the pid in a file, :func:`inspect` checks that the lock is held, that
the process still runs, that it started at the recorded time (pids are reused) and that its
command line names the program. A file that fails a check is *stale* or *foreign*: it is
reported and removed, never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from attrs import frozen

from lab.errors import Conflict, DataDirUnusable

FD_ENV = "LAB_PID_FILE_FD"
"""The variable naming the descriptor of a pid file a child inherits already locked."""

State = Literal["absent", "running", "stale", "foreign"]


@frozen(kw_only=True)
class PidStatus:
    state: State
    pid: int | None = None
    reason: str = ""
    """Why a file is stale or foreign (for the message that reports its removal)."""

    @property
    def running(self) -> bool:
        return self.state == "running"


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (field 22 of ``/proc/PID/stat``), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            after_name = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if after_name[0] == "Z":  # a zombie has exited; its parent just has not reaped it
        return None
    return int(after_name[19])


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def names_program(argv: Iterable[str], programs: Iterable[str]) -> bool:
    """Whether a command line runs one of ``programs`` (``lab-agent``, ``lab.agent.main``)."""
    wanted = set(programs)
    return any(arg in wanted or arg.rsplit("/", 1)[-1] in wanted for arg in argv)


def _read(path: Path) -> tuple[int, int | None] | None:
    try:
        fields = path.read_text(encoding="ascii").split()
        pid = int(fields[0])
        started = int(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    return (pid, started) if pid > 0 else None


def is_locked(path: Path) -> bool:
    """Whether some process holds the ``flock`` of ``path`` (False when there is no file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may just have taken
    return False


def inspect(path: Path, programs: Iterable[str]) -> PidStatus:
    """What the pid file at ``path`` says, checked against the lock and ``/proc``.

    Running only if the file is locked, its pid lives, started at the recorded time and runs
    one of ``programs``. Does not change anything (see :func:`check`).
    """
    record = _read(path)
    if record is None:
        return PidStatus(state="absent" if not path.exists() else "stale", reason="unreadable")
    pid, recorded = record
    started = start_time(pid)
    if started is None:
        return PidStatus(state="stale", pid=pid, reason=f"pid {pid} is not running")
    if recorded is not None and started != recorded:
        return PidStatus(state="stale", pid=pid, reason=f"pid {pid} is another process now")
    argv = command_line(pid)
    if not names_program(argv, programs):
        shown = " ".join(argv)[:80] or "?"
        return PidStatus(state="foreign", pid=pid, reason=f"pid {pid} is not ours: {shown}")
    if not is_locked(path):
        return PidStatus(state="stale", pid=pid, reason=f"pid {pid} does not hold the file lock")
    return PidStatus(state="running", pid=pid)


def check(path: Path, programs: Iterable[str]) -> PidStatus:
    """:func:`inspect`, and remove a stale or foreign file (the status says why).

    A file some process still holds the lock of is left alone: its holder removes it.
    """
    status = inspect(path, programs)
    if status.state in ("stale", "foreign") and not is_locked(path):
        path.unlink(missing_ok=True)
    return status


def _lock(path: Path) -> int:
    """Open ``path`` (0600) and take its lock; Conflict naming the holder if it is taken,
    DataDirUnusable when the file cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DataDirUnusable(
            f"cannot create pid file {path}: {exc.strerror}",
            details={"hint": f"{path.parent} must be a directory this user may write"},
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        record = _read(path)
        holder = f" (pid {record[0]})" if record else ""
        raise Conflict(
            f"already running{holder}: {path} is locked",
            details={"hint": "stop it first, or run status"},
        ) from None
    return fd


def _write(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid} {start_time(pid) or 0}\n".encode("ascii"), 0)


def lock_for_child(path: Path) -> int:
    """Lock ``path`` for a child about to be started: pass the returned descriptor to it
    (``pass_fds``, and its number in ``LAB_PID_FILE_FD``), then :func:`record_child`.

    Raises :class:`Conflict` when the file is locked (the daemon runs).
    """
    fd = _lock(path)
    os.set_inheritable(fd, True)
    return fd


def record_child(fd: int, pid: int) -> None:
    """Write the child's pid and start time, then drop our copy (the child keeps the lock)."""
    try:
        _write(fd, pid)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(path: Path) -> Iterator[Path]:
    """Hold the pid file of this process while the block runs; remove it at the end.

    Adopts the descriptor a starter passed down in ``LAB_PID_FILE_FD`` when it is this very
    file (already locked for us); otherwise locks the file itself. Raises :class:`Conflict`
    when another live process holds it.
    """
    fd = _inherited(path)
    if fd is None:
        fd = _lock(path)
    try:
        _write(fd, os.getpid())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _inherited(path: Path) -> int | None:
    text = os.environ.pop(FD_ENV, "")
    if not text.isdigit():
        return None
    fd = int(text)
    try:
        given, here = os.fstat(fd), path.stat()
    except OSError:
        return None
    if (given.st_dev, given.st_ino) != (here.st_dev, here.st_ino):
        return None
    os.set_inheritable(fd, False)  # not to our own children
    return fd
