"""Start, stop and inspect a background daemon through a pid file (no shell involved).

:class:`Standalone` and the functions below it are what ``labctl init labd|bastion|agent
standalone`` have in common; each command only says which daemon and what it does beyond
(:mod:`lab.local.labd`, :mod:`lab.local.agent`, :mod:`lab.local.bastion`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from lab.errors import Conflict, Unavailable
from lab.local.health import is_healthy, wait_healthy
from lab.runtime.output import emit, is_data
from lab.runtime.pidfile import FD_ENV, check, lock_for_child, record_child, start_time
from lab.runtime.progress import Spinner


def read_pid(pid_file: Path, programs: Sequence[str]) -> int | None:
    """The pid in ``pid_file`` if that process is one of ``programs`` and holds the file.

    A stale or foreign file (dead pid, reused pid, another program, no lock) is removed and
    reported on stderr; its pid is never returned, so it is never signalled.
    """
    status = check(pid_file, programs)
    if status.state in ("stale", "foreign"):
        print(f"removed {status.state} pid file {pid_file}: {status.reason}", file=sys.stderr)
    return status.pid if status.running else None


def start_background(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str],
    programs: Sequence[str],
) -> int:
    """Start ``argv`` detached with output to ``log_file``; Conflict if already running.

    The child inherits the pid file's lock and keeps it until it exits (lab.runtime.pidfile).
    """
    running = read_pid(pid_file, programs)
    if running is not None:
        raise Conflict(
            f"already running (pid {running})", details={"hint": "stop it first, or run status"}
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = lock_for_child(pid_file)
    try:
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, FD_ENV: str(fd)},
                start_new_session=True,
                close_fds=True,
                pass_fds=(fd,),
            )
    except BaseException:
        os.close(fd)
        pid_file.unlink(missing_ok=True)
        raise
    record_child(fd, proc.pid)
    return proc.pid


def exited_early(pid: int) -> int | None:
    """The exit status if our child ``pid`` has already exited (reaps it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def stop_background(
    pid_file: Path, programs: Sequence[str], *, timeout: float = 15.0
) -> int | None:
    """SIGTERM the process of ``pid_file``, SIGKILL after ``timeout``; returns its pid.

    Only a pid that :func:`read_pid` vouches for is signalled.
    """
    pid = read_pid(pid_file, programs)
    if pid is None:
        return None
    started = start_time(pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if start_time(pid) != started:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


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


# --- `labctl init ... standalone`: one daemon of ours in the background, files in its data dir


@frozen(kw_only=True)
class Standalone:
    """A daemon that ``labctl init ... standalone`` runs, and where its files are."""

    name: str
    """The program (``labd``, ``lab-bastion``...): in messages and the pid and log file names."""
    module: str
    """What ``python -m`` runs."""
    data_dir: Path
    data_env: str
    """The environment variable that names ``data_dir`` to the daemon."""
    url: str = ""
    """Where it answers ``/healthz``, for daemons that serve."""
    cafile: Path | None = None
    """The CA that signs an https ``url``'s certificate."""

    @property
    def programs(self) -> tuple[str, str]:
        """How its command line names it: ``python -m MODULE`` or the console script."""
        return (self.module, self.name)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"


def local_url(scheme: str, host: str, port: int) -> str:
    """How to reach a daemon bound to ``host``:``port`` from this box (wildcards: loopback)."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


def spawn(daemon: Standalone, *args: str) -> int:
    """Start ``daemon`` with ``args`` in the background, told its data dir; returns the pid.

    Raises :class:`Conflict` when it already runs.
    """
    env = dict(os.environ)
    env[daemon.data_env] = str(daemon.data_dir)
    return start_background(
        python_argv(daemon.module, *args),
        pid_file=daemon.pid_file,
        log_file=daemon.log_file,
        env=env,
        programs=daemon.programs,
    )


def start_healthy(daemon: Standalone, *args: str, wait: float) -> int:
    """:func:`spawn` ``daemon``, then wait up to ``wait`` seconds until its ``url`` is healthy.

    Raises :class:`Conflict` (already running) and :class:`Unavailable` (it exited, or did not
    become healthy in time; it is then left running).
    """
    pid = spawn(daemon, *args)
    log_file = daemon.log_file
    with Spinner(f"waiting for {daemon.name} (pid {pid}) to answer at {daemon.url}"):
        wait_healthy(
            daemon.url,
            timeout=wait,
            alive=lambda: require_started(pid, log_file),
            cafile=daemon.cafile,
        )
    return pid


def stop_command(daemon: Standalone) -> None:
    """The whole of ``... standalone stop``: SIGTERM (SIGKILL after 15 s), then say so."""
    pid = stop_background(daemon.pid_file, daemon.programs)
    print(f"{daemon.name} is not running" if pid is None else f"{daemon.name} stopped (pid {pid})")


def status_command(daemon: Standalone, *, fmt: str, extra: Mapping[str, Any] | None = None) -> None:
    """The whole of ``... standalone status`` for a daemon that serves ``/healthz``.

    ``fmt`` is a checked output format: ``-o json`` prints ``{"running", "pid", "url",
    "healthy", **extra}``; a table format one line.
    """
    pid = read_pid(daemon.pid_file, daemon.programs)
    healthy = pid is not None and is_healthy(daemon.url, cafile=daemon.cafile)
    report = {"running": pid is not None, "pid": pid, "url": daemon.url, "healthy": healthy}
    if is_data(fmt):
        emit({**report, **(extra or {})}, fmt)
    else:
        state = "running" if pid else "not running"
        detail = (
            f" (pid {pid}) at {daemon.url}, {'healthy' if healthy else 'not healthy'}"
            if pid
            else ""
        )
        print(f"{daemon.name} {state}{detail}")
