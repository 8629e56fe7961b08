"""lab.client.wscore, the fast exec's sans-IO WebSocket client, against wsproto as the server:
scripted bytes, no sockets."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from lab.client import wscore

MAX = 1024 * 1024 + 13


def accepted() -> tuple[WSConnection, wscore.ClientHandshake, bytes]:
    """A wsproto server that accepted our upgrade, our handshake, and the bytes after it."""
    server = WSConnection(ConnectionType.SERVER)
    hand = wscore.ClientHandshake("lab.example:3100", "/ws/exec")
    server.receive_data(hand.request())
    (request,) = list(server.events())
    assert isinstance(request, Request)
    assert (request.host, request.target) == ("lab.example:3100", "/ws/exec")
    answer = server.send(AcceptConnection())
    rest = hand.receive(answer[:10])
    assert rest is None  # the head is not whole yet
    rest = hand.receive(answer[10:] + server.send(TextMessage(data="hi")))
    assert rest is not None
    return server, hand, rest


def test_upgrade_accepted_and_first_frame_kept() -> None:
    _, _, rest = accepted()
    reader = wscore.FrameReader(MAX)
    reader.feed(rest)
    assert reader.next() == (wscore.TEXT, b"hi")
    assert reader.next() is None


def test_our_frames_are_what_wsproto_reads() -> None:
    server, _, _ = accepted()
    payloads = [b"", b"x" * 125, b"y" * 126, b"z" * 65535, bytes(range(256)) * 300]
    for payload in payloads:
        server.receive_data(wscore.frame(wscore.BINARY, payload))
    server.receive_data(wscore.frame(wscore.TEXT, b'{"type":"pong"}'))
    got = [e for e in server.events() if isinstance(e, Message)]
    assert [bytes(e.data) for e in got if isinstance(e, BytesMessage)] == payloads
    assert [e.data for e in got if isinstance(e, TextMessage)] == ['{"type":"pong"}']
    server.receive_data(wscore.close_frame(1000))
    (close,) = list(server.events())
    assert isinstance(close, CloseConnection)
    assert close.code == 1000


def test_a_frame_is_masked_with_its_key() -> None:
    data = wscore.frame(wscore.BINARY, b"abcdef", key=b"\x01\x02\x03\x04")
    assert data[:2] == b"\x82\x86"
    assert data[2:6] == b"\x01\x02\x03\x04"
    assert wscore.mask(data[6:], b"\x01\x02\x03\x04") == b"abcdef"
    assert data[6:] != b"abcdef"


def test_reader_joins_fragments_and_passes_control_frames_between() -> None:
    server, _, _ = accepted()
    wire = server.send(BytesMessage(data=b"part1-", message_finished=False))
    wire += server.send(Ping(payload=b"p"))
    wire += server.send(BytesMessage(data=b"part2", message_finished=True))
    wire += server.send(CloseConnection(code=4005, reason="revoked"))
    reader = wscore.FrameReader(MAX)
    out = []
    for i in range(len(wire)):  # byte by byte: every partial header and payload
        reader.feed(wire[i : i + 1])
        while (item := reader.next()) is not None:
            out.append(item)
    assert out[0] == (wscore.PING, b"p")
    assert out[1] == (wscore.BINARY, b"part1-part2")
    assert out[2][0] == wscore.CLOSE
    assert wscore.parse_close(out[2][1]) == (4005, "revoked")
    assert wscore.parse_close(b"") == (1005, "")


def test_a_message_past_the_limit_is_too_big() -> None:
    server, _, _ = accepted()
    reader = wscore.FrameReader(1000)
    reader.feed(server.send(BytesMessage(data=b"x" * 1001)))
    with pytest.raises(wscore.TooBig):
        reader.next()
    fragments = wscore.FrameReader(1000)
    fragments.feed(server.send(BytesMessage(data=b"x" * 600, message_finished=False)))
    fragments.feed(server.send(BytesMessage(data=b"x" * 600, message_finished=True)))
    with pytest.raises(wscore.TooBig):
        fragments.next()


@pytest.mark.parametrize(
    "wire",
    [
        b"\x82\x81\x00\x00\x00\x00a",  # masked by the server
        b"\xc2\x01a",  # RSV1 without an extension
        b"\x00\x01a",  # a continuation that starts nothing
        b"\x83\x01a",  # an unknown opcode
        b"\x09\x01a",  # a fragmented ping
    ],
)
def test_broken_frames_are_errors(wire: bytes) -> None:
    reader = wscore.FrameReader(MAX)
    reader.feed(wire)
    with pytest.raises(wscore.WebSocketError):
        reader.next()


def test_rejection_carries_status_and_body() -> None:
    server = WSConnection(ConnectionType.SERVER)
    hand = wscore.ClientHandshake("h", "/ws/exec")
    server.receive_data(hand.request())
    list(server.events())
    body = b'{"error": {"code": "unauthenticated", "message": "no"}}'
    headers = [(b"content-length", str(len(body)).encode())]
    wire = server.send(RejectConnection(status_code=401, headers=headers, has_body=True))
    wire += server.send(RejectData(data=body))
    assert hand.receive(wire[:-5]) is None  # the body is not whole yet
    with pytest.raises(wscore.Rejected) as caught:
        hand.receive(wire[-5:])
    assert (caught.value.status, caught.value.body) == (401, body)


def test_rejection_bodies_chunked_or_to_the_close() -> None:
    chunked = wscore.ClientHandshake("h", "/")
    head = b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n"
    assert chunked.receive(head + b"3\r\nabc\r\n") is None
    with pytest.raises(wscore.Rejected) as caught:
        chunked.receive(b"2\r\nde\r\n0\r\n\r\n")
    assert (caught.value.status, caught.value.body) == (403, b"abcde")
    until_close = wscore.ClientHandshake("h", "/")
    assert until_close.receive(b"HTTP/1.1 502 Bad Gateway\r\n\r\npartial") is None
    with pytest.raises(wscore.Rejected) as caught:
        until_close.receive(b"")
    assert (caught.value.status, caught.value.body) == (502, b"partial")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Accept: wrong\r\n\r\n", "Accept"),
        (b"HTTP/1.1 101 Switching\r\nConnection: Upgrade\r\n\r\n", "did not upgrade"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
    ],
)  # fmt: skip
def test_a_broken_upgrade_is_a_handshake_error(answer: bytes, words: str) -> None:
    hand = wscore.ClientHandshake("h", "/")
    with pytest.raises(wscore.WebSocketError, match=words):
        hand.receive(answer)


def test_closed_before_the_answer_is_a_handshake_error() -> None:
    hand = wscore.ClientHandshake("h", "/")
    assert hand.receive(b"HTTP/1.1 101") is None
    with pytest.raises(wscore.WebSocketError, match="closed during"):
        hand.receive(b"")
