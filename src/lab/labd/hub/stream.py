"""One exec or log stream relayed through an agent's connection, as seen by a labd route.

A :class:`HubStream` is what ``async with hub.agent_stream(...)`` yields. Items from the agent
arrive in an inbox filled by the agent connection's reader; the caller drains it with
``async for`` and grants output credit as its own consumer drains (``send(Credit)`` or
:meth:`HubStream.consumed`), so a slow consumer slows the remote process and the inbox never
holds more payload than the credit the caller granted.

The reader never waits for a caller: :meth:`HubStream.deliver` only appends (the agent's
credit bounds the bytes; consecutive stdout or stderr frames are merged, so tiny frames do not
pile up as items; log frames stay one line each). A caller that stops reading stalls its own
stream and nothing else.

Stream ids are renumbered: the agent sees ids chosen per agent connection, the caller sees the
``stream_id`` of its own start message on every item (a merged data frame carries the
sequence number of its first frame).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import attrs
import trio

from lab.errors import Invalid, Unavailable
from lab.proto.frames import MAX_PAYLOAD, Channel, DataFrame
from lab.proto.hub_session import RelayedStream, StartMessage, StreamItem
from lab.proto.messages import (
    Credit,
    Error,
    ExecExit,
    ExecStart,
    LogsEnd,
    Message,
    Resize,
    Signal,
    StdinClose,
)

__all__ = ["HubStream", "Outgoing", "Session", "StartMessage", "StreamItem"]

Outgoing = bytes | Credit | Signal | Resize | StdinClose
"""What a caller may send: stdin bytes or a control message (its ``stream_id`` is replaced)."""


class Session(Protocol):
    """The agent session a stream belongs to (:class:`AgentConnection` fits)."""

    @property
    def name(self) -> str: ...

    async def enqueue(self, item: Message | bytes, /) -> None: ...


# Consecutive data frames of one channel are merged in the inbox up to this many bytes.
MERGE_LIMIT = MAX_PAYLOAD


@attrs.define
class _Chunk:
    """Payload of consecutive data frames of one channel, waiting for the caller: the first
    frame's bytes as they arrived (a bulk transfer's usual case: handed on without a copy),
    copied into a bytearray only when a second frame is merged in."""

    channel: Channel
    seq: int  # of the first frame merged in
    payload: bytes | bytearray


class HubStream(RelayedStream):
    """The caller's end of one stream on an agent connection. Create with ``hub.agent_stream``.

    The protocol checks (channels, sequence, credit, renumbering) are :class:`RelayedStream`'s;
    this adds the inbox and the waiting."""

    def __init__(
        self, conn: Session, start: StartMessage, agent_stream_id: int, *, window: int
    ) -> None:
        super().__init__(start, agent_stream_id, window=window)
        self.server_name = conn.name
        self._conn = conn
        self._stdin_changed = trio.Event()
        self._inbox: deque[StreamItem | _Chunk] = deque()
        self._arrived = trio.Event()
        self._closed = False  # nothing more will be queued (last item, abort, caller left)
        self._done = False  # the caller has seen the last item

    # --- the caller's API ---

    def __aiter__(self) -> HubStream:
        return self

    async def __anext__(self) -> StreamItem:
        """The next item from the agent; after the last one, ``StopAsyncIteration``.

        When the agent connection is lost or labd shuts down, the last item is an ``Error``
        (code ``unavailable``).
        """
        if self._done:
            raise StopAsyncIteration
        while not self._inbox:
            if self._closed:
                self._done = True
                if self.aborted is not None:
                    return self.aborted
                raise StopAsyncIteration
            await self._arrived.wait()
        item = self._inbox.popleft()
        if isinstance(item, _Chunk):
            payload = item.payload
            return DataFrame(
                stream_id=self.stream_id,
                channel=item.channel,
                seq=item.seq,
                payload=payload if isinstance(payload, bytes) else bytes(payload),
            )
        if isinstance(item, ExecExit | LogsEnd | Error):
            self._done = True
        return item

    async def send(self, item: Outgoing) -> None:
        """Send stdin bytes or a control message (``Credit``, ``Signal``, ``Resize``,
        ``StdinClose``) to the agent.

        Stdin waits for the agent's stdin credit (so a slow process slows the writer).
        Raises :class:`Invalid` for something this stream cannot take (stdin on a stream
        started without ``stdin``, a signal to a log stream, an out-of-range credit) and
        :class:`Unavailable` once the agent connection is gone. Control messages for a stream
        the agent already ended are dropped. Cancellation while waiting for credit sends
        nothing of the unsent rest.
        """
        if isinstance(item, bytes | bytearray | memoryview):
            await self._send_stdin(bytes(item))
            return
        if isinstance(item, Credit):
            try:
                credit = self.input.grant(item.bytes)
            except ValueError as exc:
                raise Invalid(str(exc), details={"fields": ["credit.bytes"]}) from None
            await self._forward(credit)
            return
        if not isinstance(item, Signal | Resize | StdinClose):
            raise Invalid(f"a stream does not take {type(item).__name__} messages")
        if not self.is_exec:
            raise Invalid(f"{item.TYPE} applies to exec streams only")
        await self._forward(attrs.evolve(item, stream_id=self.agent_stream_id))

    async def consumed(self, n: int) -> None:
        """Tell the stream its consumer read ``n`` payload bytes; credit is granted to the
        agent in batches (every half window). Use this *or* ``send(Credit)``, not both."""
        credit = self.input.consumed(n)
        if credit is not None:
            await self._forward(credit)

    # --- internals ---

    async def _forward(self, msg: Credit | Signal | Resize | StdinClose) -> None:
        if self.aborted is not None:
            raise Unavailable(self.aborted.message)
        if self.finished:
            return  # the remote side is gone; nothing left to steer
        await self._conn.enqueue(msg)

    async def _send_stdin(self, data: bytes) -> None:
        start = self.start
        if not isinstance(start, ExecStart) or not start.stdin:
            raise Invalid("this stream was not started with stdin")
        view = memoryview(data)
        while view:
            while self.stdin.window.available == 0:
                if not self.active:
                    break
                await self._stdin_changed.wait()
            if self.aborted is not None:
                raise Unavailable(self.aborted.message)
            if self.finished:
                return  # the process is gone; its stdin with it
            frame, view = self.stdin.chunk(Channel.STDIN, view)
            await self._conn.enqueue(frame)

    def _notify(self) -> None:
        self._stdin_changed.set()
        self._stdin_changed = trio.Event()

    # --- called by the agent connection's reader ---

    def stdin_credit(self) -> None:
        """The agent granted stdin credit (the session counted it): wake the writer."""
        self._notify()

    def deliver(self, item: StreamItem) -> None:
        """Queue ``item`` for the caller (never waits); the last item ends the stream.

        Items for a stream the caller left or labd ended are dropped.
        """
        last = isinstance(item, ExecExit | LogsEnd | Error)
        if not self._closed:
            self._queue(item)
            self._arrived.set()
            self._arrived = trio.Event()
        if last:
            self._closed = True
            self._notify()

    def _queue(self, item: StreamItem) -> None:
        if not isinstance(item, DataFrame):
            self._inbox.append(item)
            return
        tail = self._inbox[-1] if self._inbox else None
        # Log frames are one line each (the frame is the line's boundary): never merged.
        if (
            isinstance(tail, _Chunk)
            and item.channel != Channel.LOG
            and tail.channel == item.channel
            and len(tail.payload) + len(item.payload) <= MERGE_LIMIT
        ):
            if isinstance(tail.payload, bytes):
                tail.payload = bytearray(tail.payload)
            tail.payload += item.payload
        else:
            self._inbox.append(_Chunk(item.channel, item.seq, item.payload))

    def abort(self, code: str, message: str) -> bool:
        """End the stream from labd's side; the caller's last item is an ``Error``."""
        if not super().abort(code, message):
            return False
        self._closed = True
        self._arrived.set()
        self._notify()
        return True

    def close_inbox(self) -> None:
        """The caller left: drop whatever is still queued."""
        self._closed = True
        self._inbox.clear()
        self._arrived.set()
