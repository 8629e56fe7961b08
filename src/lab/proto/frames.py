"""Binary data frames: stream bytes multiplexed on one WebSocket.

Layout (big endian): 4-byte stream id, 1-byte channel, 8-byte sequence number, payload.
Sequence numbers count frames per stream per channel, starting at 0.
"""

from __future__ import annotations

import enum
import struct

from attrs import frozen

from lab.proto.errors import CloseCode, ProtocolError

HEADER = struct.Struct(">IBQ")
HEADER_SIZE = HEADER.size
MAX_STREAM_ID = 2**32 - 1
MAX_SEQ = 2**64 - 1
# Large enough for any read the executor does (64 KiB) with room to spare; a peer that sends
# more is either broken or trying to make us buffer.
MAX_PAYLOAD = 1024 * 1024


class Channel(enum.IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2
    LOG = 3


@frozen(kw_only=True)
class DataFrame:
    stream_id: int
    channel: Channel
    seq: int
    payload: bytes


def encode_data(stream_id: int, channel: Channel | int, seq: int, payload: bytes) -> bytes:
    """The binary frame for ``payload``; raises :class:`ProtocolError` on out-of-range fields."""
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ProtocolError(f"stream id {stream_id} out of range")
    if not 0 <= seq <= MAX_SEQ:
        raise ProtocolError(f"sequence number {seq} out of range")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}",
            close_code=CloseCode.MESSAGE_TOO_BIG,
        )
    return HEADER.pack(stream_id, _channel(channel), seq) + payload


def decode_data(frame: bytes | bytearray | memoryview) -> DataFrame:
    """Parse a binary frame; short frames, unknown channels and oversize payloads are errors."""
    if len(frame) < HEADER_SIZE:
        raise ProtocolError(f"data frame of {len(frame)} bytes is shorter than its header")
    if len(frame) - HEADER_SIZE > MAX_PAYLOAD:
        raise ProtocolError(
            f"data frame payload exceeds {MAX_PAYLOAD} bytes", close_code=CloseCode.MESSAGE_TOO_BIG
        )
    stream_id, channel, seq = HEADER.unpack_from(frame)
    return DataFrame(
        stream_id=stream_id,
        channel=_channel(channel),
        seq=seq,
        payload=bytes(frame[HEADER_SIZE:]),
    )


def _channel(value: int) -> Channel:
    try:
        return Channel(value)
    except ValueError:
        raise ProtocolError(
            f"unknown data channel {value}", close_code=CloseCode.UNSUPPORTED_DATA
        ) from None
