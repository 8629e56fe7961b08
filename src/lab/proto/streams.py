"""Sans-IO stream multiplexing: credit-based flow control and sequence checking.

A sender may put at most as many payload bytes on a stream as the receiver granted (the
initial window plus every ``credit`` message). The receiver grants more as its consumer reads,
so a slow reader backpressures the remote process instead of filling memory. Each channel of
each stream numbers its frames 0, 1, 2, …; a gap or a repeat is a protocol error.

:class:`StreamTable` is every connection's table of open streams (the agent's dispatcher,
labd's agent session, labd's client connection, labctl's stream session): stream ids ascend and
are never reused, which tells a stream that ended here (late items are dropped) from one that
was never opened (a protocol error).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from lab.proto.errors import CloseCode, ProtocolError
from lab.proto.frames import MAX_PAYLOAD, Channel, DataFrame, encode_data
from lab.proto.messages import DEFAULT_WINDOW, Credit, ExecExit

# No single grant may make the window exceed this; a larger total means a confused peer.
MAX_WINDOW = 2**31 - 1

# A receiver may open a stream wider than the protocol's initial window by granting the
# difference in a `credit` right after the stream starts; senders need nothing new. With only
# DEFAULT_WINDOW in flight a bulk transfer stalls on credit round trips over each TLS +
# WebSocket hop; a few MiB keep the hops busy and cut credit messages to one per GROWN/2 bytes.
GROWN_WINDOW = 4 * 1024 * 1024
# What one receiver holds open for all of its concurrent streams together, so a fan-out over
# many servers does not multiply the memory a slow consumer can pin (it gets DEFAULT_WINDOW).
WINDOW_BUDGET = 8 * 1024 * 1024


def grown_window(concurrent: int) -> int:
    """The window to open per stream when ``concurrent`` streams share one receiver.

    Between ``DEFAULT_WINDOW`` (never less than the protocol's) and ``GROWN_WINDOW``; grant
    ``grown_window(n) - DEFAULT_WINDOW`` at the start to open it.
    """
    share = WINDOW_BUDGET // max(1, concurrent)
    return max(DEFAULT_WINDOW, min(GROWN_WINDOW, share))


class SendWindow:
    """Credit the local side may still spend on one stream."""

    def __init__(self, initial: int = DEFAULT_WINDOW) -> None:
        self.available = initial

    def grant(self, n: int) -> None:
        if n <= 0 or self.available + n > MAX_WINDOW:
            raise ProtocolError(
                f"credit of {n} bytes is out of range", close_code=CloseCode.FLOW_CONTROL
            )
        self.available += n

    def consume(self, n: int) -> None:
        if n > self.available:
            raise ProtocolError(
                f"sending {n} bytes with only {self.available} bytes of credit",
                close_code=CloseCode.FLOW_CONTROL,
            )
        self.available -= n


class ReceiveWindow:
    """Credit granted to the peer on one stream, and when to grant more.

    More credit is granted once the consumer has read half a window, so grants are batched
    rather than one ``credit`` message per frame.
    """

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self.outstanding = window  # what the peer may still send
        self.unacknowledged = 0  # consumed but not yet granted back

    def received(self, n: int) -> None:
        if n > self.outstanding:
            raise ProtocolError(
                f"peer sent {n} bytes with only {self.outstanding} bytes of credit",
                close_code=CloseCode.FLOW_CONTROL,
            )
        self.outstanding -= n

    def grant(self, n: int) -> None:
        """Explicitly allow the peer ``n`` more bytes (for receivers that pace by hand)."""
        if n <= 0 or self.outstanding + n > MAX_WINDOW:
            raise ValueError(f"credit of {n} bytes is out of range")
        self.outstanding += n

    def consumed(self, n: int) -> int:
        """Record ``n`` bytes read by the consumer; the credit to grant now (0: none yet)."""
        self.unacknowledged += n
        if self.unacknowledged * 2 < self.window:
            return 0
        grant, self.unacknowledged = self.unacknowledged, 0
        self.outstanding += grant
        return grant


class SequenceCheck:
    """Per-channel frame counters of one received stream."""

    def __init__(self) -> None:
        self._next: dict[Channel, int] = {}

    def check(self, frame: DataFrame) -> None:
        expected = self._next.get(frame.channel, 0)
        if frame.seq != expected:
            kind = "duplicate" if frame.seq < expected else "gap"
            raise ProtocolError(
                f"sequence {kind} on stream {frame.stream_id} channel {frame.channel.name}: "
                f"got {frame.seq}, expected {expected}",
                close_code=CloseCode.SEQUENCE,
            )
        self._next[frame.channel] = expected + 1


class OutputStream:
    """Sending side of one stream: numbers frames, spends credit, enforces EOF before exit.

    ``channels`` are the channels this side produces (stdout+stderr for an exec, or the log
    channel). :meth:`exit` refuses to build ``exec-exit`` before every channel reached EOF,
    which is what guarantees that output is never cut.
    """

    def __init__(
        self,
        stream_id: int,
        channels: Iterable[Channel] = (Channel.STDOUT, Channel.STDERR),
        *,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.stream_id = stream_id
        self.window = SendWindow(window)
        self._seq = dict.fromkeys(channels, 0)
        self._open = set(self._seq)
        self.bytes_out = 0
        self.exited = False

    def data(self, channel: Channel, payload: bytes) -> bytes:
        """Spend credit for ``payload`` and return its binary frame."""
        if channel not in self._open:
            raise ProtocolError(f"channel {channel.name} of stream {self.stream_id} is closed")
        self.window.consume(len(payload))
        seq = self._seq[channel]
        self._seq[channel] = seq + 1
        self.bytes_out += len(payload)
        return encode_data(self.stream_id, channel, seq, payload)

    def chunk(self, channel: Channel, view: memoryview) -> tuple[bytes, memoryview]:
        """The frame of as much of ``view`` as the credit allows (at most ``MAX_PAYLOAD``
        bytes), and the rest still to send. Call it only with credit available
        (``window.available > 0``): a sender waits for a grant before the next chunk."""
        size = min(self.window.available, MAX_PAYLOAD)  # a slice stops at the end anyway
        if size == 0:
            raise ProtocolError(
                f"no credit left on stream {self.stream_id}", close_code=CloseCode.FLOW_CONTROL
            )
        return self.data(channel, bytes(view[:size])), view[size:]

    def grant(self, credit: Credit) -> None:
        self.window.grant(credit.bytes)

    def eof(self, channel: Channel) -> None:
        self._open.discard(channel)

    @property
    def at_eof(self) -> bool:
        return not self._open

    def exit(
        self,
        *,
        code: int | None = None,
        signal: str | None = None,
        bytes_dropped: int = 0,
        timed_out: bool = False,
    ) -> ExecExit:
        if self._open:
            names = ", ".join(sorted(c.name for c in self._open))
            raise ProtocolError(
                f"exec-exit on stream {self.stream_id} before EOF of {names}",
                close_code=CloseCode.INTERNAL_ERROR,
            )
        if self.exited:
            raise ProtocolError(f"stream {self.stream_id} already exited")
        self.exited = True
        return ExecExit(
            stream_id=self.stream_id,
            code=code,
            signal=signal,
            bytes_out=self.bytes_out,
            bytes_dropped=bytes_dropped,
            timed_out=timed_out,
        )


class InputStream:
    """Receiving side of one stream: checks sequence and credit, grants credit back.

    After ``exec-exit`` no data may follow, and ``bytes_out`` must equal what arrived, so a
    receiver knows the output it shows is complete.
    """

    def __init__(self, stream_id: int, *, window: int = DEFAULT_WINDOW) -> None:
        self.stream_id = stream_id
        self.window = ReceiveWindow(window)
        self._seq = SequenceCheck()
        self.bytes_in = 0
        self.exit: ExecExit | None = None

    def received(self, frame: DataFrame) -> bytes:
        """Validate ``frame`` and return its payload for the consumer."""
        if frame.stream_id != self.stream_id:
            raise ProtocolError(
                f"frame for stream {frame.stream_id} given to stream {self.stream_id}",
                close_code=CloseCode.UNKNOWN_STREAM,
            )
        if self.exit is not None:
            raise ProtocolError(f"data on stream {self.stream_id} after exec-exit")
        self._seq.check(frame)
        self.window.received(len(frame.payload))
        self.bytes_in += len(frame.payload)
        return frame.payload

    def consumed(self, n: int) -> Credit | None:
        """The consumer read ``n`` bytes; a ``credit`` message to send, if one is due."""
        grant = self.window.consumed(n)
        return Credit(stream_id=self.stream_id, bytes=grant) if grant else None

    def grant(self, n: int) -> Credit:
        """Allow the peer ``n`` more bytes now, whatever the consumer has read."""
        self.window.grant(n)
        return Credit(stream_id=self.stream_id, bytes=n)

    def exited(self, msg: ExecExit) -> None:
        if self.exit is not None:
            raise ProtocolError(f"second exec-exit on stream {self.stream_id}")
        if msg.bytes_out != self.bytes_in:
            raise ProtocolError(
                f"stream {self.stream_id} announced {msg.bytes_out} bytes, {self.bytes_in} arrived",
                close_code=CloseCode.SEQUENCE,
            )
        self.exit = msg


T = TypeVar("T")


class StreamTable(Generic[T]):
    """The open streams of one connection, by id; ids ascend and are never reused.

    Whoever numbers the streams (labd towards an agent and towards labctl) opens each with
    :attr:`next_id`; the peer that is told the ids (the agent) opens them as they come, and an
    id that does not ascend is a protocol error. For an id above the highest one opened,
    :meth:`get` raises ``UNKNOWN_STREAM``; for a lower one whose stream ended here it returns
    ``None``, since the peer may still be sending what it wrote before it learnt of the end.
    """

    def __init__(self) -> None:
        self._open: dict[int, T] = {}
        self.highest = 0  # the highest id ever opened

    @property
    def next_id(self) -> int:
        """The id of the next stream this side numbers."""
        return self.highest + 1

    def open(self, stream_id: int, entry: T) -> T:
        """Add ``entry`` as stream ``stream_id``; ProtocolError when the id does not ascend."""
        if stream_id <= self.highest:
            raise ProtocolError(f"stream {stream_id} was already started")
        self.highest = stream_id
        self._open[stream_id] = entry
        return entry

    def get(self, stream_id: int) -> T | None:
        """The open stream ``stream_id``; None when it ended here; ProtocolError
        (``UNKNOWN_STREAM``) when it was never opened."""
        entry = self._open.get(stream_id)
        if entry is None and stream_id > self.highest:
            raise ProtocolError(
                f"stream {stream_id} was never opened", close_code=CloseCode.UNKNOWN_STREAM
            )
        return entry

    def require(self, stream_id: int | None) -> T:
        """The open stream ``stream_id``; ProtocolError (``UNKNOWN_STREAM``) for any other id
        (for a connection on which no stream ends before the peer is done with it)."""
        entry = self._open.get(stream_id) if stream_id is not None else None
        if entry is None:
            raise ProtocolError(f"no stream {stream_id}", close_code=CloseCode.UNKNOWN_STREAM)
        return entry

    def close(self, stream_id: int) -> T | None:
        """Forget stream ``stream_id`` (it ended); its entry, or None if it was not open."""
        return self._open.pop(stream_id, None)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._open.values()))

    def values(self) -> list[T]:
        """The open streams in the order they were opened."""
        return list(self._open.values())
