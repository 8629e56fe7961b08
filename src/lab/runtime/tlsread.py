"""Reading TLS in whole buffers rather than one 16 KiB record at a time.

``trio.SSLStream.receive_some(n)`` returns what one ``SSL_read`` gives: at most one TLS record
(16 KiB), however much the socket read brought in. A bulk transfer (exec output relayed at
hundreds of MB/s) then pays the whole Python stack above the stream (hypercorn's protocol,
wsproto's parser and events, trio's locks and checkpoints) once per 16 KiB: profiles of labd
relaying 1 GB showed that per-record work above the socket as its largest cost.
:func:`receive_records` returns the first record together with every further whole record the
stream has already decrypted or buffered, up to ``max_bytes``, without waiting for more.

It reads the records through the stream's ``SSLObject`` (trio keeps it private: trio 0.35 has
no public way to ask for more than one record). Only what is already in the stream's
incoming buffer is read, right after a ``receive_some`` returned and before anything else can
run, so trio's own state (handshake, locks, the outgoing buffer it flushes on its next
operation) is unaffected; any TLS error or the peer's close_notify stops the extra reads and
is reported by the next ``receive_some`` as trio reports it.
"""

from __future__ import annotations

import ssl
from typing import Any

import trio

# What one read may return: several records, a WebSocket frame header and its payload.
BULK_READ = 256 * 1024


def more_records(stream: trio.SSLStream[Any], first: bytes | bytearray, max_bytes: int) -> bytes:
    """``first`` (what ``receive_some`` just returned) followed by the whole TLS records the
    stream already holds, up to ``max_bytes`` in all; never waits."""
    size = len(first)
    if not size or size >= max_bytes:
        return bytes(first)
    ssl_object: ssl.SSLObject = stream._ssl_object
    parts = [first]
    while size < max_bytes:
        try:
            more = ssl_object.read(max_bytes - size)
        except ssl.SSLError:  # no whole record left (want-read), or an error: next time
            break
        if not more:  # close_notify: the next receive_some returns b"" too
            break
        parts.append(more)
        size += len(more)
    return b"".join(parts)


async def receive_records(stream: trio.SSLStream[Any], max_bytes: int = BULK_READ) -> bytes:
    """``stream.receive_some(max_bytes)`` that returns every whole record already received
    (up to ``max_bytes``) rather than one. Raises what ``receive_some`` raises; b"" at EOF."""
    return more_records(stream, await stream.receive_some(max_bytes), max_bytes)


class RecordReadingStream(trio.abc.Stream):
    """A ``trio.SSLStream`` whose ``receive_some`` returns whole buffers (see
    :func:`receive_records`); everything else is the wrapped stream's. For code that reads
    a stream it is handed (trio-websocket's reader)."""

    def __init__(self, tls: trio.SSLStream[Any]) -> None:
        self.tls = tls

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await receive_records(self.tls, max_bytes or BULK_READ)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.tls.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.tls.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.tls.aclose()
