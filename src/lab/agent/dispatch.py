"""Route labd's stream messages on one agent connection to the exec and log drivers.

A :class:`Dispatcher` lives exactly as long as one connection and owns a nursery with one
child task per stream (an exec pipe or a log stream, each a nursery of its own). When the
connection ends, that nursery is cancelled: every running process group is killed and reaped
(:func:`lab.agent.executor.run_exec` guarantees it) and log readers stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import attrs
import trio

from lab.agent.executor import Control, Outgoing, run_exec
from lab.agent.leftovers import Ledger
from lab.agent.logsource import stream_logs
from lab.errors import LabError
from lab.proto import Channel, CloseCode, DataFrame, ProtocolError
from lab.proto.messages import (
    Credit,
    Error,
    ExecStart,
    LogsEnd,
    LogsStart,
    Message,
    Request,
    Resize,
    Response,
    RpcError,
    Signal,
    StdinClose,
    StreamCancel,
)
from lab.proto.streams import InputStream, OutputStream, StreamTable

log = logging.getLogger("lab.agent")

SendFn = Callable[[Outgoing], Awaitable[None]]
"""Sends to labd; raises :class:`ConnectionGone` once the connection is closed."""

# Queued control messages per stream (the executor handles them without waiting).
CONTROL_QUEUE = 16
LOG_QUEUE = 64


# Why a command could not start, as the CLI reports it (labctl exec exits 127, 126 or 1).
COMMAND_NOT_FOUND = "command_not_found"
COMMAND_NOT_EXECUTABLE = "command_not_executable"
NO_SUCH_DIRECTORY = "no_such_directory"


def spawn_failure(start: ExecStart, exc: OSError) -> tuple[str, str]:
    """The error code and message for a command that could not be started, as sh says it.

    The working directory is checked first: the kernel reports a missing cwd with the same
    errno as a missing program.
    """
    program = start.argv[0]
    if start.cwd is not None and (exc.filename == start.cwd or not os.path.isdir(start.cwd)):
        return NO_SUCH_DIRECTORY, f"no such directory: {start.cwd}"
    if isinstance(exc, FileNotFoundError):
        return COMMAND_NOT_FOUND, f"command not found: {program}"
    if isinstance(exc, PermissionError | IsADirectoryError):
        return COMMAND_NOT_EXECUTABLE, f"cannot execute {program}: {exc.strerror or exc}"
    return "exec_failed", f"cannot run {program}: {exc.strerror or exc}"


class ConnectionGone(Exception):
    """The connection a stream was relayed on is closed (raised by the driver's send)."""


@attrs.define(eq=False)
class _Stream:
    start: ExecStart | LogsStart
    scope: trio.CancelScope
    control: trio.MemorySendChannel[Control]
    stdin: trio.MemorySendChannel[bytes] | None = None
    # stdin from labd: its sequence and the credit the executor granted.
    stdin_in: InputStream = attrs.field(
        default=attrs.Factory(lambda self: InputStream(self.start.stream_id), takes_self=True)
    )


class Dispatcher:
    """Start, steer and cancel the streams labd asks for on one connection."""

    def __init__(
        self,
        nursery: trio.Nursery,
        send: SendFn,
        *,
        log_sources: Mapping[str, Path],
        kill_grace: float = 5.0,
        ledger: Ledger | None = None,
    ) -> None:
        self._nursery = nursery
        self._ledger = ledger
        self._send = send
        self._log_sources = dict(log_sources)
        self._kill_grace = kill_grace
        self._streams = StreamTable[_Stream]()  # labd numbers them

    @property
    def running(self) -> int:
        return len(self._streams)

    # --- entry points for the connection driver ---

    async def message(self, msg: Message) -> None:
        """Handle one delivered control message; raises ProtocolError for a broken peer."""
        if isinstance(msg, ExecStart | LogsStart):
            self._start(msg)
        elif isinstance(msg, Credit | Signal | Resize | StdinClose):
            stream = self._streams.get(msg.stream_id)
            if stream is not None:
                await self._control(stream, msg)
        elif isinstance(msg, StreamCancel):
            stream = self._streams.get(msg.stream_id)
            if stream is not None:
                stream.scope.cancel()
        elif isinstance(msg, Request):
            await self._send(
                Response(
                    request_id=msg.request_id,
                    error=RpcError(code="not_found", message=f"no method {msg.method!r}"),
                )
            )
        elif isinstance(msg, Error):
            log.warning("labd reports: %s (%s)", msg.message, msg.code)
        elif isinstance(msg, Response):
            pass  # the agent sends no requests yet
        else:
            raise ProtocolError(f"{msg.TYPE} is not a message labd sends to an agent")

    async def data(self, frame: DataFrame) -> None:
        """Handle one binary frame from labd (stdin only)."""
        if frame.channel is not Channel.STDIN:
            raise ProtocolError(
                f"labd may only send stdin, not {frame.channel.name}",
                close_code=CloseCode.UNSUPPORTED_DATA,
            )
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return  # the stream ended here; labd's late stdin is dropped
        payload = stream.stdin_in.received(frame)
        if stream.stdin is None:
            return  # started without stdin: nothing reads it
        # Never wait here: this is the connection's reader, and a process that does not read
        # its stdin must stall its own stream only. The queue is bounded in bytes by the stdin
        # credit the executor granted (checked just above), whatever the frames' sizes.
        # A closed queue: the process closed its stdin or ended.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            stream.stdin.send_nowait(payload)

    def cancel_all(self) -> None:
        for stream in self._streams:
            stream.scope.cancel()

    # --- internals ---

    def _start(self, start: ExecStart | LogsStart) -> None:
        control_send, control_recv = trio.open_memory_channel[Control](CONTROL_QUEUE)
        stream = _Stream(start=start, scope=trio.CancelScope(), control=control_send)
        self._streams.open(start.stream_id, stream)
        if isinstance(start, ExecStart):
            stdin_recv = None
            if start.stdin:
                stream.stdin, stdin_recv = trio.open_memory_channel[bytes](math.inf)
            self._nursery.start_soon(self._run_exec, stream, control_recv, stdin_recv)
        else:
            self._nursery.start_soon(self._run_logs, stream, control_recv)

    async def _control(self, stream: _Stream, msg: Credit | Signal | Resize | StdinClose) -> None:
        # A stdin-close is not applied before the stdin queued ahead of it: the executor
        # drains its stdin queue before it closes the pipe.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.control.send(msg)

    async def _send_tracked(self, stream: _Stream, item: Outgoing) -> None:
        # The executor grants stdin credit by sending it; mirror it in our own check.
        if isinstance(item, Credit):
            stream.stdin_in.grant(item.bytes)
        await self._send(item)

    async def _run_exec(
        self,
        stream: _Stream,
        control: trio.MemoryReceiveChannel[Control],
        stdin: trio.MemoryReceiveChannel[bytes] | None,
    ) -> None:
        start = stream.start
        assert isinstance(start, ExecStart)
        try:
            with stream.scope:
                try:
                    result = await run_exec(
                        start,
                        lambda item: self._send_tracked(stream, item),
                        stdin=stdin,
                        control=control,
                        kill_grace=self._kill_grace,
                        ledger=self._ledger,
                    )
                except OSError as exc:
                    code, message = spawn_failure(start, exc)
                    await self._send(Error(stream_id=start.stream_id, code=code, message=message))
                    return
                log.info(
                    "exec stream %d %s ended: %s",
                    start.stream_id,
                    start.argv[0],
                    f"code {result.code}" if result.code is not None else f"SIG{result.signal}",
                )
        except ConnectionGone:
            pass  # the process group was killed on the way out; nobody is listening
        finally:
            self._forget(stream)

    async def _run_logs(self, stream: _Stream, control: trio.MemoryReceiveChannel[Control]) -> None:
        start = stream.start
        assert isinstance(start, LogsStart)
        out = OutputStream(start.stream_id, (Channel.LOG,))
        credit_changed = trio.Event()
        failure: list[LabError] = []

        async def take_credit() -> None:
            nonlocal credit_changed
            async for msg in control:
                if isinstance(msg, Credit):
                    out.grant(msg)
                    credit_changed.set()
                    credit_changed = trio.Event()

        async def pump(lines: trio.MemoryReceiveChannel[str]) -> None:
            async for line in lines:
                payload = line.encode("utf-8", errors="replace")
                # One line is one frame: wait until the whole line fits the credit.
                while out.window.available < len(payload):
                    await credit_changed.wait()
                await self._send(out.data(Channel.LOG, payload))

        async def read(lines: trio.MemorySendChannel[str]) -> None:
            async with lines:
                try:
                    await stream_logs(start, lines, sources=self._log_sources)
                except LabError as exc:
                    failure.append(exc)

        try:
            with stream.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(take_credit)
                    line_send, line_recv = trio.open_memory_channel[str](LOG_QUEUE)
                    async with trio.open_nursery() as lines:
                        lines.start_soon(read, line_send)
                        lines.start_soon(pump, line_recv)
                    nursery.cancel_scope.cancel()
                if failure:
                    exc = failure[0]
                    await self._send(
                        Error(stream_id=start.stream_id, code=exc.code, message=exc.message)
                    )
                else:
                    await self._send(LogsEnd(stream_id=start.stream_id))
        except ConnectionGone:
            pass  # the stream dies with its connection
        finally:
            self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        self._streams.close(stream.start.stream_id)
        stream.control.close()
        if stream.stdin is not None:
            stream.stdin.close()
