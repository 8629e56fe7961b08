"""A stand-in for labd's agent hub at its seam: streams run the real agent executor and log
sources in this process, without an agent connection in between."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from lab.agent.executor import run_exec
from lab.agent.logsource import stream_logs
from lab.errors import LabError, NotFound, Unavailable
from lab.labd.relay.relay import Incoming, Uplink
from lab.proto import Channel, DataFrame, decode_data
from lab.proto.messages import (
    Credit,
    Error,
    ExecStart,
    LogsEnd,
    LogsStart,
    Message,
)


class FakeStream:
    def __init__(self, start: ExecStart | LogsStart) -> None:
        self.start = start
        self.stream_id = start.stream_id
        self._items_send, self._items = trio.open_memory_channel[Incoming](64)
        self._stdin_send, self._stdin = trio.open_memory_channel[bytes](64)
        self._control_send, self._control = trio.open_memory_channel[Any](64)
        self.pid: int | None = None

    def __aiter__(self) -> AsyncIterator[Incoming]:
        return self._items.__aiter__()

    async def send(self, item: Uplink) -> None:
        if isinstance(item, bytes):
            await self._stdin_send.send(item)
        else:
            await self._control_send.send(item)

    async def run(self, sources: dict[str, Path]) -> None:
        async with self._items_send:
            try:
                if isinstance(self.start, ExecStart):
                    await self._run_exec()
                else:
                    await self._run_logs(sources)
            except (LabError, OSError) as exc:
                code = exc.code if isinstance(exc, LabError) else "invalid"
                await self._items_send.send(
                    Error(stream_id=self.stream_id, code=code, message=str(exc))
                )

    async def _run_exec(self) -> None:
        assert isinstance(self.start, ExecStart)

        async def agent_send(out: Message | bytes) -> None:
            if isinstance(out, bytes):
                await self._items_send.send(decode_data(out))
            elif isinstance(out, Credit):
                pass  # stdin credit: the fake queue is the window
            else:
                if hasattr(out, "pid"):
                    self.pid = out.pid
                await self._items_send.send(out)  # type: ignore[arg-type]

        await run_exec(
            self.start, agent_send, stdin=self._stdin, control=self._control, kill_grace=5.0
        )

    async def _run_logs(self, sources: dict[str, Path]) -> None:
        assert isinstance(self.start, LogsStart)
        start = self.start
        line_send, line_recv = trio.open_memory_channel[str](16)
        failed: list[LabError] = []
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                async with line_send:
                    try:
                        await stream_logs(start, line_send, sources=sources, poll_interval=0.05)
                    except LabError as exc:
                        failed.append(exc)

            nursery.start_soon(produce)
            seq = 0
            async for line in line_recv:
                frame = DataFrame(
                    stream_id=self.stream_id, channel=Channel.LOG, seq=seq, payload=line.encode()
                )
                seq += 1
                await self._items_send.send(frame)
        if failed:
            raise failed[0]
        await self._items_send.send(LogsEnd(stream_id=self.stream_id))


class FakeHub:
    def __init__(self, *, online: set[str], sources: dict[str, Path] | None = None) -> None:
        self.online = set(online)
        self.known = set(online)
        self.sources = sources or {}
        self.opened: list[FakeStream] = []
        self.closed = trio.Event()
        self.closed_count = 0

    def is_online(self, name: str) -> bool:
        return name in self.online

    @asynccontextmanager
    async def agent_stream(
        self, server_name: str, start_msg: ExecStart | LogsStart
    ) -> AsyncIterator[FakeStream]:
        if server_name not in self.known:
            raise NotFound(f"no server {server_name!r}")
        if server_name not in self.online:
            raise Unavailable("agent not connected")
        stream = FakeStream(start_msg)
        self.opened.append(stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.run, self.sources)
                try:
                    yield stream
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self.closed_count += 1
            self.closed.set()
            self.closed = trio.Event()
