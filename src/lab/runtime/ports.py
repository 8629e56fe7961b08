"""Who listens on a TCP port: read from /proc (Linux), for "port in use" messages."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.errors import AddressInUse

_LISTEN = "0A"


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            _, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port:
                inodes.add(fields[9])
    return inodes


def listener_of(port: int, *, proc: Path = Path("/proc")) -> tuple[int, str] | None:
    """``(pid, command line)`` of a process listening on TCP ``port``, or None if unknown.

    Needs permission to read other processes' fds (root, or the same user); anything that
    cannot be read is skipped.
    """
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            if target in wanted:
                return int(entry.name), command_line(int(entry.name), proc=proc)
    return None


def command_line(pid: int, *, proc: Path = Path("/proc")) -> str:
    """The command line of ``pid`` joined with spaces ('' when it is gone or unreadable)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


@contextmanager
def naming_the_port(host: str, port: int) -> Iterator[None]:
    """Turn "address already in use" while binding ``host:port`` into :class:`AddressInUse`.

    The message names the port and, when /proc tells, the process that holds it.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        owner = listener_of(port)
        who = f" by pid {owner[0]} ({owner[1]})" if owner else ""
        raise AddressInUse(
            f"port {port} on {host or '*'} is already in use{who}",
            details={"hint": "stop the other process or choose another port", "port": port},
        ) from None
