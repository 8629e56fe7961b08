"""The sans-IO HTTP/1.1 answer reader: framing, byte by byte, and what it refuses."""

from __future__ import annotations

import pytest

from lab.labd.kubeproxy import h1


def run(data: bytes, *, step: int = 0, head_request: bool = False) -> tuple[h1.Head, bytes, bool]:
    """Feed ``data`` (whole, or ``step`` bytes at a time, then the end of the connection)
    and collect the head, the body and whether the connection is reusable."""
    reader = h1.ResponseReader(head_request=head_request)
    pieces = [data[i : i + step] for i in range(0, len(data), step)] if step else [data]
    pieces.append(b"")
    head: h1.Head | None = None
    body = b""
    while True:
        event = reader.next_event()
        if event is h1.NEED_DATA:
            reader.feed(pieces.pop(0))
        elif isinstance(event, h1.Head):
            assert head is None
            head = event
        elif isinstance(event, bytes):
            body += event
        else:
            assert head is not None
            return head, body, reader.keep_alive


CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n1A\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer-One: 1\r\n\r\n"
)


@pytest.mark.parametrize("step", [0, 1, 2, 7])
def test_chunked_answers_come_whole_whatever_the_pieces(step: int) -> None:
    head, body, reusable = run(CHUNKED, step=step)
    assert head.status == 200
    assert head.headers == [
        (b"content-type", b"application/json"),
        (b"transfer-encoding", b"chunked"),
    ]
    assert body == b"hello" + b"x" * 26 and reusable


@pytest.mark.parametrize("step", [0, 1, 5])
def test_length_framing_and_keep_alive(step: int) -> None:
    data = b"HTTP/1.1 201 Created\r\nContent-Length: 2, 2\r\n\r\n{}"
    assert run(data, step=step)[1:] == (b"{}", True)
    closing = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n{}"
    assert run(closing, step=step)[1:] == (b"{}", False)
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert run(old, step=step)[1:] == (b"{}", False)


def test_bodies_that_are_not_there_and_bodies_that_run_to_the_close() -> None:
    assert run(b"HTTP/1.1 204 No Content\r\n\r\n")[1:] == (b"", True)
    assert run(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")[1:] == (b"", True)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    assert run(head, head_request=True)[1:] == (b"", True)
    assert run(b"HTTP/1.1 200 OK\r\n\r\nto the end", step=3)[1:] == (b"to the end", False)
    gzip_only = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw"
    assert run(gzip_only)[1:] == (b"raw", False)
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert run(both)[1:] == (b"", False)  # chunked wins; the connection is not trusted again
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n"
    assert run(extra)[1:] == (b"{}", False)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "malformed answer header"),
        (b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n", "malformed answer header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", "3 bytes before the end"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", "inside a chunked"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000, "too long"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * h1.MAX_HEAD, "longer than"),
        (b"HTTP/1.1 200 OK\r\n", "closed before an answer head"),
    ],
)
def test_what_is_no_answer_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(h1.BadResponse, match=says):
        run(data)


def test_request_heads_are_one_request_or_none() -> None:
    head = h1.request_head("GET", "/api?x=1", [(b"host", b"api"), (b"accept", b"*/*")])
    assert head == b"GET /api?x=1 HTTP/1.1\r\nhost: api\r\naccept: */*\r\n\r\n"
    for name, value in [
        (b"x", b"a\r\nimpersonate-user: admin"),
        (b"x", b"a\nb"),
        (b"x\r\ny", b"v"),
        (b"x", b"a\x00b"),
    ]:
        with pytest.raises(h1.BadRequestHead):
            h1.request_head("GET", "/", [(name, value)])
    with pytest.raises(h1.BadRequestHead):
        h1.request_head("GET", "/ HTTP/1.1\r\nx: y", [])
    assert h1.chunk(b"abc") == b"3\r\nabc\r\n"
