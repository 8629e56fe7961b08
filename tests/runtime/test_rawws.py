"""The sans-IO parts of the WebSocket served below the web framework (lab.runtime.rawws)."""

from __future__ import annotations

import os
import struct

import pytest

from lab.runtime.rawws import (
    BINARY,
    CLOSE,
    CONTINUATION,
    HAND_OFF,
    PING,
    PONG,
    TEXT,
    Closed,
    FrameReader,
    Ping,
    Upgrade,
    WebSocketError,
    accept_response,
    close_frame,
    frame,
    parse_upgrade,
    unmask,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
PATH = b"/ws/agent"


def head(*lines: bytes, target: bytes = PATH) -> bytes:
    base = [
        b"Host: labd:3100",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + KEY,
        b"Sec-WebSocket-Version: 13",
    ]
    return b"GET " + target + b" HTTP/1.1\r\n" + b"".join(x + b"\r\n" for x in [*base, *lines])


def request(*lines: bytes, target: bytes = PATH) -> bytes:
    return head(*lines, target=target) + b"\r\n"


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """What a client sends: masked, with the length in its shortest form."""
    key = os.urandom(4)
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + key + unmask(payload, key)


# --- the upgrade head ---


def test_a_plain_upgrade_is_served_with_its_key_and_size() -> None:
    data = request(b"X-Request-Id: abc-1", b"User-Agent: lab-agent") + b"\x81\x80rest"
    parsed = parse_upgrade(data, PATH)
    assert parsed == Upgrade(key=KEY, size=data.index(b"\r\n\r\n") + 4, request_id="abc-1")


def test_the_accept_value_is_rfc_6455s() -> None:
    # RFC 6455 section 1.3's own example.
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in accept_response(KEY)
    assert accept_response(KEY).startswith(b"HTTP/1.1 101 ")


def test_a_head_arriving_in_pieces_waits_for_its_end() -> None:
    data = request()
    for cut in (1, 5, len(b"GET /ws/agent HTTP/1.1\r\n"), len(data) - 1):
        assert parse_upgrade(data[:cut], PATH) is None
    assert isinstance(parse_upgrade(data, PATH), Upgrade)


@pytest.mark.parametrize(
    "data",
    [
        request(target=b"/ws/agent?x=1"),
        request(target=b"/ws/agents"),
        request(target=b"/api/servers"),
        b"POST /ws/agent HTTP/1.1\r\n",
        b"GET /ws/agent HTTP/1.0\r\n",
        request(b"Sec-WebSocket-Extensions: permessage-deflate"),
        request(b"Sec-WebSocket-Protocol: chat"),
        request(b"Content-Length: 3"),
        request(b"Transfer-Encoding: chunked"),
        request(b"Host: other"),
        request(b"Sec-WebSocket-Key: " + KEY),
        head().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8") + b"\r\n",
        head().replace(b"Upgrade: websocket", b"Upgrade: h2c") + b"\r\n",
        head().replace(b"Connection: Upgrade", b"Connection: keep-alive") + b"\r\n",
        head().replace(b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Key: c2hvcnQ=") + b"\r\n",
        head().replace(b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Key: !!!!") + b"\r\n",
        head().replace(b"Host: labd:3100\r\n", b"") + b"\r\n",
        head().replace(b"Host: labd:3100\r\n", b"Host labd\r\n") + b"\r\n",
        b"GET /ws/agent HTTP/1.1\nHost: x\n\n",
        head(b"X-Pad: " + b"a" * 9000) + b"\r\n",
    ],
)
def test_anything_but_a_plain_upgrade_goes_to_hypercorn(data: bytes) -> None:
    assert parse_upgrade(data, PATH) is HAND_OFF


def test_connection_tokens_and_header_case_are_read_as_http_reads_them() -> None:
    data = (
        request()
        .replace(b"Connection: Upgrade", b"connection: keep-alive, UPGRADE")
        .replace(b"Upgrade: websocket", b"UPGRADE: WebSocket")
    )
    assert isinstance(parse_upgrade(data, PATH), Upgrade)


# --- frames from the client ---


def test_messages_text_and_binary_one_read_or_byte_by_byte() -> None:
    data = client_frame(TEXT, "héllo".encode()) + client_frame(BINARY, b"\x00\x01" * 40_000)
    assert FrameReader().receive(data) == ["héllo", b"\x00\x01" * 40_000]
    reader = FrameReader()
    events: list[object] = []
    for i in range(len(data)):
        events += reader.receive(data[i : i + 1])
    assert events == ["héllo", b"\x00\x01" * 40_000]


def test_lengths_at_each_boundary_round_trip() -> None:
    for size in (0, 125, 126, 65535, 65536, 70_000):
        payload = os.urandom(size)
        assert FrameReader().receive(client_frame(BINARY, payload)) == [payload]


def test_a_fragmented_message_with_a_ping_between_its_pieces() -> None:
    data = (
        client_frame(TEXT, b"one ", fin=False)
        + client_frame(PING, b"are you there")
        + client_frame(CONTINUATION, b"two ", fin=False)
        + client_frame(CONTINUATION, b"three")
    )
    assert FrameReader().receive(data) == [Ping(b"are you there"), "one two three"]


def test_pongs_are_ignored_and_a_close_ends_the_reading() -> None:
    reader = FrameReader()
    data = (
        client_frame(PONG, b"")
        + client_frame(CLOSE, struct.pack("!H", 4000) + b"bye")
        + client_frame(TEXT, b"after")
    )
    assert reader.receive(data) == [Closed(4000, "bye")]
    assert reader.closed
    assert reader.receive(client_frame(TEXT, b"later")) == []
    assert FrameReader().receive(client_frame(CLOSE, b"")) == [Closed(1005, "")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(TEXT, b"x")[:1] + bytes((1,)) + b"x", 1002),  # unmasked
        (client_frame(TEXT, b"x", rsv=0x40), 1002),
        (client_frame(0x3, b"x"), 1002),
        (client_frame(PING, b"x" * 126), 1002),
        (client_frame(PING, b"x", fin=False), 1002),
        (client_frame(CONTINUATION, b"x"), 1002),
        (client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"), 1002),
        (client_frame(TEXT, b"\xff\xfe"), 1007),
        (client_frame(CLOSE, b"\x03"), 1002),
        (client_frame(CLOSE, struct.pack("!H", 1005)), 1002),
        (client_frame(CLOSE, struct.pack("!H", 999)), 1002),
        (client_frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
    ],
    # named, not shown: the frames carry random masking keys, and xdist workers must collect
    # the same ids
    ids=[
        "unmasked",
        "rsv-bit",
        "reserved-opcode",
        "ping-over-125",
        "fragmented-ping",
        "lone-continuation",
        "text-inside-a-fragmented-message",
        "text-not-utf8",
        "close-one-byte",
        "close-1005-sent",
        "close-999",
        "close-reason-not-utf8",
    ],
)
def test_broken_frames_name_their_close_code(data: bytes, code: int) -> None:
    with pytest.raises(WebSocketError) as caught:
        FrameReader().receive(data)
    assert caught.value.code == code


def test_a_message_over_the_limit_is_refused_from_its_header() -> None:
    reader = FrameReader(max_message=1000)
    with pytest.raises(WebSocketError) as caught:
        reader.receive(client_frame(BINARY, b"x" * 1001)[:8])  # only the header arrived
    assert caught.value.code == 1009
    pieces = FrameReader(max_message=1000)
    pieces.receive(client_frame(BINARY, b"x" * 600, fin=False))
    with pytest.raises(WebSocketError):
        pieces.receive(client_frame(CONTINUATION, b"x" * 401))


def test_an_idle_reader_holds_no_buffer() -> None:
    reader = FrameReader()
    data = client_frame(TEXT, b"x" * 300)
    assert reader.receive(data[:100]) == []
    assert reader._buf is not None
    assert reader.receive(data[100:]) == ["x" * 300]
    assert reader._buf is None


def test_unmasking_is_rfc_6455s_at_every_length_and_offset() -> None:
    # RFC 6455 5.7: "Hello" masked with 37 fa 21 3d.
    assert unmask(bytes.fromhex("7f9f4d5158"), bytes.fromhex("37fa213d")) == b"Hello"
    key = bytes((0x00, 0x01, 0x80, 0xFF))  # a zero byte leaves its quarter as it is
    for size in (1, 2, 3, 4, 5, 255, 256 * 1024 + 3):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        assert unmask(payload, key) == expected
        assert unmask(memoryview(bytearray(payload)), bytearray(key)) == expected
    assert unmask(b"", key) == b""


# --- frames to the client ---


def test_server_frames_are_unmasked_and_final() -> None:
    assert frame(TEXT, b"hi") == b"\x81\x02hi"
    assert frame(BINARY, b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert frame(BINARY, b"x" * 65536)[:10] == b"\x82\x7f" + struct.pack("!Q", 65536)


def test_a_close_reason_is_cut_to_fit_at_a_character() -> None:
    data = close_frame(4006, "é" * 100)
    assert data[0] == 0x88 and data[1] <= 125
    assert struct.unpack("!H", data[2:4]) == (4006,)
    assert data[4:].decode("utf-8") == "é" * 61
