"""Run one exec request as a real subprocess and stream it over the agent's connection.

The exec pipe is a nursery (stdout pump, stderr pump, stdin pump, control handler, timer,
waiter). The process runs in its own session and process group, so signals, the timeout and
cancellation reach everything it started.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import signal
import struct
import subprocess
import termios
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from lab.agent.leftovers import Ledger
from lab.proto.frames import Channel
from lab.proto.messages import (
    Credit,
    ExecExit,
    ExecStart,
    ExecStarted,
    Message,
    Resize,
    Signal,
    StdinClose,
)
from lab.proto.streams import OutputStream, ReceiveWindow

Outgoing = Message | bytes
"""What the executor hands to ``send``: a control message or an encoded binary data frame."""

SendFn = Callable[[Outgoing], Awaitable[None]]
Control = Credit | Signal | Resize | StdinClose

# One read is one data frame. Bigger frames mean fewer WebSocket messages, TLS writes and
# socket sends per byte on every hop (the cost that dominates a bulk transfer); a read never
# waits for a full buffer, so interactive output still goes out as soon as it is written.
READ_SIZE = 256 * 1024
# Output pipes are grown to this (F_SETPIPE_SZ, best effort) so one read can take READ_SIZE
# bytes instead of the default 64 KiB. It is also how far a process gets ahead of a reader
# that gives no credit before its writes block, so it stays one read, not more.
PIPE_SIZE = READ_SIZE
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def minimal_env(*, tty: bool) -> dict[str, str]:
    """The environment a command starts from; the request's ``env`` is merged on top.

    The agent's own environment is not inherited: it may hold secrets and differs per host.
    """
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = "/"
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": home}
    if tty:
        env["TERM"] = "xterm-256color"
    return env


async def run_exec(
    start: ExecStart,
    send: SendFn,
    *,
    stdin: trio.MemoryReceiveChannel[bytes] | None = None,
    control: trio.abc.ReceiveChannel[Control] | None = None,
    kill_grace: float = 5.0,
    window: int | None = None,
    ledger: Ledger | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> ExecExit:
    """Run ``start.argv``; send ``exec-started``, data frames and finally ``exec-exit``.

    ``send`` receives messages and encoded data frames in order; while it blocks, output is not
    read, so a slow peer backpressures the process. Output is sent only within the credit the
    peer granted (``window`` initially, then ``credit`` messages on ``control``). ``stdin``
    carries payloads for the process (its end is EOF); the executor grants stdin credit back
    through ``send`` as it writes. ``task_status.started`` receives the pid.

    ``exec-exit`` is sent (and returned) only once stdout and stderr reached EOF and the process
    was reaped. On timeout the group gets SIGTERM, then SIGKILL ``kill_grace`` seconds later.

    Cancellation: the whole process group is SIGKILLed and the process reaped before this
    returns (no orphans); no ``exec-exit`` is sent. Raises ``OSError`` when the process cannot
    be started (no such program, bad cwd). ``ledger`` notes the running process, so that an
    agent started after this one died can kill it (:mod:`lab.agent.leftovers`).
    """
    run = _Exec(start, send, kill_grace=kill_grace, window=window)
    await run.spawn()
    try:
        if ledger is not None:
            ledger.record(run.pid)
        task_status.started(run.pid)
        await send(ExecStarted(stream_id=start.stream_id, pid=run.pid))
        return await run.run(stdin, control)
    finally:
        with trio.CancelScope(shield=True):
            await run.cleanup()
        if ledger is not None:
            ledger.forget(run.pid)


class _Credit:
    """The output window plus a way for pumps to wait until there is credit."""

    def __init__(self, out: OutputStream) -> None:
        self.out = out
        self._changed = trio.Event()

    def grant(self, msg: Credit) -> None:
        self.out.grant(msg)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_available(self) -> None:
        while self.out.window.available == 0:
            await self._changed.wait()


class _Exec:
    def __init__(self, start: ExecStart, send: SendFn, *, kill_grace: float, window: int | None):
        self.start = start
        self.send = send
        self.kill_grace = kill_grace
        channels = (Channel.STDOUT,) if start.tty else (Channel.STDOUT, Channel.STDERR)
        kwargs: dict[str, Any] = {} if window is None else {"window": window}
        self.out = OutputStream(start.stream_id, channels, **kwargs)
        self.stdin_window = ReceiveWindow(**kwargs)
        self.credit = _Credit(self.out)
        self.proc: trio.Process | None = None
        self.master: int | None = None  # pty master (tty mode)
        self.bytes_dropped = 0
        self.timed_out = False
        self.delivered = 0  # output bytes counted against the cap
        self.stdin_closed = trio.Event()
        self._stdin_wait: trio.CancelScope | None = None
        self.send_lock = trio.Lock()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def spawn(self) -> None:
        start = self.start
        env = minimal_env(tty=start.tty) | start.env
        opts: dict[str, Any] = {"cwd": start.cwd, "env": env, "start_new_session": True}
        if start.tty:
            master, slave = os.openpty()
            try:
                _set_winsize(slave, start.rows, start.cols)
                # setsid() has run by the time preexec_fn does, so the pty becomes the
                # controlling terminal of the new session (job control, ^C, SIGWINCH).
                self.proc = await trio.lowlevel.open_process(
                    start.argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    preexec_fn=_take_controlling_tty,
                    **opts,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            self.master = master
        else:
            self.proc = await trio.lowlevel.open_process(
                start.argv,
                stdin=subprocess.PIPE if start.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                **opts,
            )
            for pipe in (self.proc.stdout, self.proc.stderr):
                if isinstance(pipe, trio.lowlevel.FdStream):
                    _grow_pipe(pipe.fileno())

    async def run(
        self,
        stdin: trio.MemoryReceiveChannel[bytes] | None,
        control: trio.abc.ReceiveChannel[Control] | None,
    ) -> ExecExit:
        proc = self.proc
        assert proc is not None
        pumps_done = trio.Event()
        async with trio.open_nursery() as nursery:
            if self.start.timeout is not None:
                nursery.start_soon(self._timer)
            if control is not None:
                nursery.start_soon(self._control, control)
            if stdin is not None and self.start.stdin:
                nursery.start_soon(self._stdin, stdin)
            nursery.start_soon(self._pump_all, pumps_done)
            returncode = await proc.wait()
            # The process is reaped; its children may still hold the pipes open. Output is
            # complete only at EOF, so wait for it (the timer still guards this wait).
            await pumps_done.wait()
            nursery.cancel_scope.cancel()
        if returncode < 0:
            exit_msg = self.out.exit(
                signal=_signal_name(-returncode),
                bytes_dropped=self.bytes_dropped,
                timed_out=self.timed_out,
            )
        else:
            exit_msg = self.out.exit(
                code=returncode, bytes_dropped=self.bytes_dropped, timed_out=self.timed_out
            )
        await self.send(exit_msg)
        return exit_msg

    async def cleanup(self) -> None:
        """Kill what is left of the group if we did not finish cleanly, reap, close fds."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None or not self.out.exited:
            self._killpg(signal.SIGKILL)
        await proc.wait()
        if self.master is not None:
            os.close(self.master)
            self.master = None
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                await stream.aclose()

    # --- tasks ---

    async def _pump_all(self, done: trio.Event) -> None:
        proc = self.proc
        assert proc is not None
        async with trio.open_nursery() as nursery:
            if self.master is not None:
                nursery.start_soon(self._pump, self.master, Channel.STDOUT)
            else:
                assert isinstance(proc.stdout, trio.lowlevel.FdStream)
                assert isinstance(proc.stderr, trio.lowlevel.FdStream)
                nursery.start_soon(self._pump, proc.stdout.fileno(), Channel.STDOUT)
                nursery.start_soon(self._pump, proc.stderr.fileno(), Channel.STDERR)
        done.set()

    async def _pump(self, fd: int, channel: Channel) -> None:
        cap = self.start.output_cap
        while True:
            capped = cap is not None and self.delivered >= cap
            if not capped:
                # Without credit we do not read: the pipe fills and the process blocks.
                await self.credit.wait_available()
            await trio.lowlevel.wait_readable(fd)
            if capped:
                size = READ_SIZE
            else:
                size = min(READ_SIZE, self.out.window.available)
                if size == 0:  # the other pump spent the credit while we waited
                    continue
            try:
                chunk = os.read(fd, size)
            except BlockingIOError:
                continue
            except OSError as exc:
                # A pty master reports EIO once every holder of the slave side is gone.
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                self.out.eof(channel)
                return
            if cap is not None:
                keep = max(0, min(len(chunk), cap - self.delivered))
                self.bytes_dropped += len(chunk) - keep
                chunk = chunk[:keep]
                self.delivered += keep
            if chunk:
                frame = self.out.data(channel, chunk)
                async with self.send_lock:
                    await self.send(frame)

    async def _stdin(self, stdin: trio.MemoryReceiveChannel[bytes]) -> None:
        while True:
            # stdin-close arrives on the control channel, but the dispatcher queued every
            # stdin payload that preceded it on the wire before delivering it: drain what is
            # buffered, then close, so no input is lost to the race between the two channels.
            try:
                chunk = stdin.receive_nowait()
            except trio.WouldBlock:
                if self.stdin_closed.is_set():
                    break
                with trio.CancelScope() as scope:
                    self._stdin_wait = scope
                    try:
                        chunk = await stdin.receive()
                    except trio.EndOfChannel:
                        break
                self._stdin_wait = None
                if scope.cancelled_caught:
                    continue
            except trio.EndOfChannel:
                break
            try:
                await self._write_stdin(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break  # the process closed its stdin; further input has nowhere to go
            grant = self.stdin_window.consumed(len(chunk))
            if grant:
                async with self.send_lock:
                    await self.send(Credit(stream_id=self.start.stream_id, bytes=grant))
        await self._close_stdin()

    async def _write_stdin(self, chunk: bytes) -> None:
        proc = self.proc
        assert proc is not None
        if self.master is not None:
            view = memoryview(chunk)
            while view:
                await trio.lowlevel.wait_writable(self.master)
                try:
                    view = view[os.write(self.master, view) :]
                except BlockingIOError:
                    continue
        elif proc.stdin is not None:
            await proc.stdin.send_all(chunk)

    async def _close_stdin(self) -> None:
        proc = self.proc
        assert proc is not None
        if self.master is not None:
            # A pty has no half-close; the line discipline turns ^D into EOF for the reader.
            with trio.move_on_after(1):
                await self._write_stdin(b"\x04")
        elif proc.stdin is not None:
            await proc.stdin.aclose()

    async def _control(self, control: trio.abc.ReceiveChannel[Control]) -> None:
        async for msg in control:
            if isinstance(msg, Credit):
                self.credit.grant(msg)
            elif isinstance(msg, Signal):
                self._killpg(signal.Signals[f"SIG{msg.name.value}"])
            elif isinstance(msg, Resize):
                if self.master is not None:
                    # The kernel sends SIGWINCH to the foreground group on a size change.
                    _set_winsize(self.master, msg.rows, msg.cols)
            elif isinstance(msg, StdinClose):
                self.stdin_closed.set()
                if self._stdin_wait is not None:
                    self._stdin_wait.cancel()

    async def _timer(self) -> None:
        assert self.start.timeout is not None
        await trio.sleep(self.start.timeout)
        self.timed_out = True
        self._killpg(signal.SIGTERM)
        await trio.sleep(self.kill_grace)
        self._killpg(signal.SIGKILL)

    def _killpg(self, sig: signal.Signals) -> None:
        # The process is its group's leader (start_new_session), so its pid is the group id.
        # The group may outlive the leader (background children), hence no returncode check.
        with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
            os.killpg(self.pid, sig)


def _grow_pipe(fd: int) -> None:
    # The kernel refuses sizes above fs.pipe-max-size for unprivileged users, and the whole
    # call on systems without it: the default pipe then just means smaller frames.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name.removeprefix("SIG")
    except ValueError:
        return str(signum)
