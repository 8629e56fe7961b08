"""Commands a previous lab-agent left running, found and killed when the agent starts again.

An agent that stops cleanly kills every running command's process group. One that dies
without cleaning up (kill -9, the OOM killer, a crash) cannot: a command with a tty dies with
its pty, and under the systemd unit the cgroup takes the rest, but a command on pipes started
by an agent run by hand keeps running with nobody to read it. So each running command leaves a
small file in the state dir, ``running/<pid>``, holding the process's start time; the next
agent kills every group whose leader is still that same process (same pid *and* start time,
so a recycled pid is never touched) and removes the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("lab.agent")

RUNNING_DIR = "running"


def start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (clock ticks since boot), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


class Ledger:
    """The ``running/`` files of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / RUNNING_DIR
        self._made = False  # the folder exists (made once, not once per command)

    def record(self, pid: int) -> None:
        """Note a started command (its process group leader)."""
        started = start_time(pid)
        if started is None:
            return  # already gone: nothing to leave behind
        try:
            if not self._made:
                self.folder.mkdir(mode=0o700, exist_ok=True)
                self._made = True
            (self.folder / str(pid)).write_text(started)
        except OSError as exc:  # a full or read-only state dir must not fail the command
            self._made = False
            log.warning("cannot note running command %d in %s: %s", pid, self.folder, exc)

    def forget(self, pid: int) -> None:
        (self.folder / str(pid)).unlink(missing_ok=True)

    def kill_leftovers(self) -> list[int]:
        """SIGKILL the groups a previous agent left running; the pids killed."""
        if not self.folder.is_dir():
            return []
        killed = []
        for entry in sorted(self.folder.iterdir()):
            recorded = entry.read_text().strip() if entry.is_file() else ""
            if entry.name.isdigit() and recorded and start_time(int(entry.name)) == recorded:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
            entry.unlink(missing_ok=True)
        if killed:
            log.warning(
                "killed %d command(s) a previous lab-agent left running: pid %s",
                len(killed),
                ", ".join(map(str, killed)),
            )
        return killed
