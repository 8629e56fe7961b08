"""Helpers for executor tests: a peer that validates what the executor sends."""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

from lab.agent.executor import Control, Outgoing
from lab.proto.frames import Channel, decode_data
from lab.proto.messages import DEFAULT_WINDOW, ExecExit, ExecStarted, Message
from lab.proto.streams import InputStream


class Peer:
    """Plays labd: checks sequence numbers and credit with the real receiving state machine.

    With ``auto_credit`` it grants credit back as soon as data arrives, like a fast consumer.
    """

    def __init__(self, stream_id: int = 7, *, window: int = DEFAULT_WINDOW, auto_credit=True):
        self.input = InputStream(stream_id, window=window)
        self.auto_credit = auto_credit
        self.messages: list[Message] = []
        self.data: dict[Channel, bytearray] = {c: bytearray() for c in Channel}
        self.order: list[str] = []
        self.granted = window
        self.control_send, self.control = trio.open_memory_channel[Control](100)
        self.changed = trio.Event()
        self.max_in_flight_violation = False

    async def send(self, item: Outgoing) -> None:
        if isinstance(item, bytes):
            frame = decode_data(item)
            payload = self.input.received(frame)  # raises on seq gap or credit overrun
            self.data[frame.channel] += payload
            self.order.append(frame.channel.name)
            if self.auto_credit:
                credit = self.input.consumed(len(payload))
                if credit is not None:
                    await self.grant(credit.bytes)
        else:
            if isinstance(item, ExecExit):
                self.input.exited(item)  # checks bytes_out against what arrived
            self.messages.append(item)
            self.order.append(item.TYPE)
        self.changed.set()
        self.changed = trio.Event()

    async def grant(self, n: int) -> None:
        self.granted += n
        await self.control_send.send(self.input.grant(n))

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()

    @property
    def started(self) -> ExecStarted:
        return next(m for m in self.messages if isinstance(m, ExecStarted))

    @property
    def exit(self) -> ExecExit:
        return next(m for m in self.messages if isinstance(m, ExecExit))

    def text(self, channel: Channel) -> str:
        return self.data[channel].decode()


async def wait_gone(pid: int) -> None:
    """Wait until ``pid`` has exited (a zombie counts: it runs nothing)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
