"""The headers that cross the proxy, and the exit status read off a channel WebSocket."""

from __future__ import annotations

import json

import pytest

from lab.labd.kubeproxy.channels import StatusScanner, exit_status
from lab.labd.kubeproxy.headers import (
    client_response_headers,
    upgrade_of,
    upstream_request_headers,
)

CLIENT = [
    (b"Host", b"labd:3100"),
    (b"Accept", b"application/json"),
    (b"Authorization", b"Bearer stolen"),
    (b"authorization", b"Basic x"),
    (b"Proxy-Authorization", b"Basic y"),
    (b"Impersonate-User", b"admin"),
    (b"impersonate-user", b"root"),
    (b"IMPERSONATE-GROUP", b"system:masters"),
    (b"Impersonate-Group", b"system:nodes"),
    (b"Impersonate-Uid", b"0"),
    (b"Impersonate-Extra-Scopes", b"all"),
    (b"impersonate-extra-acme.com%2fproject", b"p"),
    (b"X-Remote-User", b"admin"),
    (b"X-Remote-Group", b"system:masters"),
    (b"X-Remote-Extra-Foo", b"bar"),
    (b"Connection", b"keep-alive, X-Secret-Hop"),
    (b"X-Secret-Hop", b"1"),
    (b"Keep-Alive", b"timeout=5"),
    (b"Transfer-Encoding", b"chunked"),
    (b"Content-Type", b"application/json"),
    (b"X-Request-Id", b"client-chosen"),
]


def test_every_client_identity_is_removed_and_labds_set() -> None:
    out = upstream_request_headers(
        CLIENT,
        host="10.0.0.1:6443",
        user="ann",
        groups=["lab:web", "lab:ops"],
        token="cluster-token",
        request_id="rid1",
    )
    names = [n for n, _ in out]
    assert out[0] == (b"host", b"10.0.0.1:6443")
    assert (b"accept", b"application/json") in out
    assert (b"content-type", b"application/json") in out
    assert [v for n, v in out if n == b"impersonate-user"] == [b"labd:ann"]
    assert [v for n, v in out if n == b"impersonate-group"] == [b"lab:web", b"lab:ops"]
    assert [v for n, v in out if n == b"authorization"] == [b"Bearer cluster-token"]
    assert [v for n, v in out if n == b"x-request-id"] == [b"rid1"]
    for gone in (
        b"proxy-authorization",
        b"impersonate-uid",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"x-secret-hop",
    ):
        assert gone not in names
    assert not [n for n in names if n.startswith((b"impersonate-extra", b"x-remote"))]


def test_no_token_no_groups() -> None:
    out = upstream_request_headers(CLIENT, host="h", user="bob", groups=[])
    assert not [n for n, _ in out if n in (b"authorization", b"impersonate-group")]
    assert [v for n, v in out if n == b"impersonate-user"] == [b"labd:bob"]


def test_an_upgrade_keeps_its_pair() -> None:
    client = [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"SPDY/3.1"),
        (b"X-Stream-Protocol-Version", b"v4.channel.k8s.io"),
    ]
    assert upgrade_of(client) == b"SPDY/3.1"
    out = upstream_request_headers(client, host="h", user="ann", groups=[])
    assert (b"connection", b"Upgrade") in out
    assert (b"upgrade", b"SPDY/3.1") in out
    assert (b"x-stream-protocol-version", b"v4.channel.k8s.io") in out
    assert upgrade_of([(b"Upgrade", b"websocket")]) is None  # no Connection: upgrade


def test_answer_headers() -> None:
    upstream = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"10"),
        (b"Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Audit-Id", b"a1"),
    ]
    assert client_response_headers(upstream, upgraded=False) == [
        (b"content-type", b"application/json"),
        (b"content-length", b"10"),
        (b"audit-id", b"a1"),
    ]
    switched = [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Protocol", b"v5.channel.k8s.io"),
    ]
    assert client_response_headers(switched, upgraded=True) == [
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-protocol", b"v5.channel.k8s.io"),
    ]


def frame(payload: bytes, opcode: int = 2) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


FAILED = json.dumps(
    {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": "exit 3",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
).encode()


@pytest.mark.parametrize("step", [1, 2, 3, 7, 100000])
def test_the_status_is_found_however_the_bytes_are_cut(step: int) -> None:
    stream = (
        frame(b"\x01" + b"o" * 300)
        + frame(b"\x02" + b"e" * 70000)
        + frame(b"", opcode=9)
        + frame(b"\x01hi")
        + frame(b"\x03" + FAILED)
        + frame(b"\x01after")
    )
    scanner = StatusScanner()
    for i in range(0, len(stream), step):
        scanner.feed(stream[i : i + step])
    assert scanner.status == FAILED
    assert exit_status(scanner.status) == (3, "exit 3")


def test_exit_status_forms() -> None:
    assert exit_status(None) == (None, "")
    assert exit_status(b"") == (0, "")
    assert exit_status(b'{"metadata":{},"status":"Success"}') == (0, "")
    assert exit_status(b'{"status":"Failure","message":"no such pod"}') == (None, "no such pod")
    assert exit_status(b"not json") == (None, "not json")


def test_a_masked_stream_is_not_read() -> None:
    scanner = StatusScanner()
    scanner.feed(bytes([0x82, 0x85]) + b"mask" + b"\x03abcd")
    assert scanner.broken and scanner.status is None
