"""Log sources of the agent: named files (tail, follow across rotation) and the journal.

Each reader sends text lines (without the trailing newline) to a send channel and returns at
the end of the requested range; with ``follow`` it runs until cancelled. Sending blocks while
the channel is full, so a slow consumer backpressures the reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from lab.errors import NotFound, Unavailable
from lab.proto.messages import LogsStart

BLOCK = 64 * 1024
# A line longer than this is sent in pieces rather than buffered without bound.
MAX_LINE = 64 * 1024

LineSink = trio.abc.SendChannel[str]


async def stream_logs(
    start: LogsStart,
    send: LineSink,
    *,
    sources: Mapping[str, Path | str],
    journalctl: str | None = None,
    poll_interval: float = 0.5,
) -> None:
    """Serve one ``logs-start``: a named file source, else the journal.

    ``sources`` maps source names to files. ``journalctl`` is the program to run (default: found
    on ``PATH``). Raises :class:`NotFound` for an unknown source name and :class:`Unavailable`
    when the journal is asked for but there is no ``journalctl``. For files, ``since`` is not
    applied (plain files carry no reliable timestamps) and ``unit`` must be unset.
    """
    if start.source is not None:
        path = sources.get(start.source)
        if path is None:
            known = ", ".join(sorted(sources)) or "none configured"
            raise NotFound(f"no log source {start.source!r} (known: {known})")
        await tail_file(
            Path(path), send, lines=start.lines, follow=start.follow, poll_interval=poll_interval
        )
        return
    program = journalctl or shutil.which("journalctl")
    if program is None:
        raise Unavailable("this host has no journal (journalctl not found); name a file source")
    await read_journal(
        send,
        unit=start.unit,
        since=start.since,
        lines=start.lines,
        follow=start.follow,
        journalctl=program,
    )


# --- files ---


def _split(buffer: bytearray) -> list[str]:
    """Pop the complete lines out of ``buffer`` (and over-long partial lines, in pieces)."""
    out: list[str] = []
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) >= MAX_LINE:
                out.append(buffer[:MAX_LINE].decode(errors="replace"))
                del buffer[:MAX_LINE]
                continue
            return out
        out.append(buffer[:end].decode(errors="replace"))
        del buffer[: end + 1]


def _tail_offset(fd: int, size: int, lines: int) -> int:
    """Offset where the last ``lines`` lines of the file start (reading backwards in blocks)."""
    if lines == 0:
        return size
    pos = size
    newlines = 0
    # A final newline terminates the last line; it does not start a new one.
    if size and os.pread(fd, 1, size - 1) == b"\n":
        pos -= 1
    while pos > 0:
        step = min(BLOCK, pos)
        block = os.pread(fd, step, pos - step)
        idx = len(block)
        while True:
            idx = block.rfind(b"\n", 0, idx)
            if idx < 0:
                break
            newlines += 1
            if newlines == lines:
                return pos - step + idx + 1
        pos -= step
    return 0


class _FileReader:
    """Blocking reads of one followed file; every method runs in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.inode = os.fstat(self.fd).st_ino
        self.pos = 0
        self.buffer = bytearray()

    def seek_tail(self, lines: int | None) -> None:
        size = os.fstat(self.fd).st_size
        self.pos = 0 if lines is None else _tail_offset(self.fd, size, lines)

    def read_available(self) -> list[str]:
        out: list[str] = []
        while True:
            chunk = os.pread(self.fd, BLOCK, self.pos)
            if not chunk:
                return out
            self.pos += len(chunk)
            self.buffer += chunk
            out += _split(self.buffer)

    def poll(self) -> list[str]:
        """New lines since the last call, following truncation and rotation."""
        out = self.read_available()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out  # rotated away and not yet recreated: keep the old file
        if st.st_ino != self.inode:
            # Rotated: the old file is drained above; a partial last line is complete now.
            if self.buffer:
                out.append(self.buffer.decode(errors="replace"))
                self.buffer.clear()
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self.inode = os.fstat(self.fd).st_ino
            self.pos = 0
            out += self.read_available()
        elif st.st_size < self.pos:
            # Truncated in place (copytruncate): start over from its new beginning.
            self.pos = 0
            self.buffer.clear()
            out += self.read_available()
        return out

    def close(self) -> None:
        os.close(self.fd)


async def tail_file(
    path: Path,
    send: LineSink,
    *,
    lines: int | None = None,
    follow: bool = False,
    poll_interval: float = 0.5,
) -> None:
    """Send the last ``lines`` lines of ``path`` (all when ``None``), then follow it if asked.

    Following polls every ``poll_interval`` seconds, reopens the file when it is replaced
    (rotation) and starts over when it shrinks (truncation). Raises :class:`NotFound` when the
    file does not exist. Runs until cancelled when following.
    """
    try:
        reader = await trio.to_thread.run_sync(_FileReader, path)
    except FileNotFoundError:
        raise NotFound(f"log file {path} does not exist") from None
    try:
        await trio.to_thread.run_sync(reader.seek_tail, lines)
        for line in await trio.to_thread.run_sync(reader.read_available):
            await send.send(line)
        if not follow:
            if reader.buffer:  # a last line without its newline
                await send.send(reader.buffer.decode(errors="replace"))
            return
        while True:
            await trio.sleep(poll_interval)
            for line in await trio.to_thread.run_sync(reader.poll):
                await send.send(line)
    finally:
        reader.close()


# --- journal ---


def journal_argv(
    journalctl: str,
    *,
    unit: str | None = None,
    since: float | None = None,
    lines: int | None = None,
    follow: bool = False,
    now: float | None = None,
) -> list[str]:
    """The journalctl command line for a request (``since`` is seconds back from ``now``)."""
    argv = [journalctl, "--output=json", "--no-pager", "--quiet"]
    if unit is not None:
        argv.append(f"--unit={unit}")
    if since is not None:
        started = (time.time() if now is None else now) - since
        argv.append(f"--since=@{int(started)}")
    if lines is not None:
        argv.append(f"--lines={lines}")
    if follow:
        argv.append("--follow")
    return argv


def format_journal_entry(entry: Mapping[str, Any]) -> str:
    """``<ISO time> <identifier>[<pid>]: <message>`` for one ``journalctl -o json`` object."""
    stamp = ""
    raw_time = entry.get("__REALTIME_TIMESTAMP")
    if isinstance(raw_time, str) and raw_time.isdigit():
        stamp = datetime.fromtimestamp(int(raw_time) / 1e6, UTC).isoformat()
    ident = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "-"
    pid = entry.get("_PID") or entry.get("SYSLOG_PID")
    message = entry.get("MESSAGE")
    # journalctl emits non-UTF-8 or binary messages as an array of byte values.
    if isinstance(message, list):
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
            errors="replace"
        )
    elif message is None:
        message = ""
    who = f"{ident}[{pid}]" if pid else str(ident)
    return f"{stamp} {who}: {message}".lstrip()


async def read_journal(
    send: LineSink,
    *,
    unit: str | None = None,
    since: float | None = None,
    lines: int | None = None,
    follow: bool = False,
    journalctl: str = "journalctl",
    raw: bool = False,
) -> None:
    """Run ``journalctl -o json`` and send each entry (formatted, or the JSON text if ``raw``).

    Cancellation kills journalctl and reaps it. Raises :class:`Unavailable` when journalctl
    exits with an error (its last stderr line is the message).
    """
    argv = journal_argv(journalctl, unit=unit, since=since, lines=lines, follow=follow)
    try:
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        raise Unavailable(f"cannot read the journal: {journalctl} not found") from None
    errors = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            assert proc.stderr is not None
            nursery.start_soon(_collect, proc.stderr, errors)
            assert proc.stdout is not None
            buffer = bytearray()
            while chunk := await proc.stdout.receive_some(BLOCK):
                buffer += chunk
                for line in _split(buffer):
                    text = line if raw else _format_line(line)
                    if text is not None:
                        await send.send(text)
        code = await proc.wait()
        if code != 0:
            tail = errors.decode(errors="replace").strip().splitlines()
            reason = tail[-1] if tail else f"exit code {code}"
            raise Unavailable(f"journalctl failed: {reason}")
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    await stream.aclose()


def _format_line(line: str) -> str | None:
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return line  # not JSON after all: pass it through rather than lose it
    return format_journal_entry(entry) if isinstance(entry, dict) else line


async def _collect(stream: trio.abc.ReceiveStream, into: bytearray, limit: int = 8192) -> None:
    while chunk := await stream.receive_some(BLOCK):
        into += chunk
        del into[:-limit]
