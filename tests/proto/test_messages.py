from __future__ import annotations

import json

import pytest

from lab.errors import Invalid
from lab.proto import (
    Channel,
    CloseCode,
    ProtocolError,
    decode,
    decode_data,
    encode,
    encode_data,
)
from lab.proto.frames import HEADER_SIZE, MAX_PAYLOAD
from lab.proto.messages import (
    MESSAGE_TYPES,
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    Heartbeat,
    Hello,
    LogsEnd,
    LogsStart,
    Ping,
    Pong,
    Request,
    Resize,
    Response,
    RpcError,
    ServerShutdown,
    Signal,
    SignalName,
    StdinClose,
    StreamCancel,
    Welcome,
)

SAMPLES = [
    Hello(version="0.1.0", facts={"cpus": 4, "disks": [{"name": "sda"}]}, labels={"role": "w"}),
    Welcome(session_id="abc", heartbeat_interval=10.0),
    Heartbeat(load=[0.5, 0.25, 0.1], uptime=12.5, memory_total=8, memory_available=4, version="1"),
    ServerShutdown(retry_after=3.0, reason="restart"),
    ExecStart(
        stream_id=1,
        argv=["ls", "-l"],
        env={"A": "b"},
        cwd="/tmp",
        tty=True,
        rows=30,
        cols=100,
        stdin=True,
        timeout=5.0,
        output_cap=1000,
    ),
    ExecStarted(stream_id=1, pid=42),
    StdinClose(stream_id=1),
    Resize(stream_id=1, rows=10, cols=20),
    Signal(stream_id=1, name=SignalName.HUP),
    Credit(stream_id=1, bytes=4096),
    ExecExit(stream_id=1, code=3, bytes_out=10, bytes_dropped=2, timed_out=False),
    ExecExit(stream_id=1, signal="KILL", timed_out=True),
    Error(stream_id=None, code="not_found", message="no such source"),
    LogsStart(stream_id=2, unit="sshd", since=60.0, lines=10, follow=True),
    LogsEnd(stream_id=2),
    StreamCancel(stream_id=2),
    Request(request_id="r1", method="facts", params={"x": 1}),
    Response(request_id="r1", result={"ok": True}),
    Response(request_id="r1", error=RpcError(code="invalid", message="bad")),
    Ping(nonce=5),
    Pong(nonce=5),
]


def test_every_message_type_has_a_sample() -> None:
    assert {type(m).TYPE for m in SAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TYPE)
def test_round_trip(msg) -> None:
    text = encode(msg)
    body = json.loads(text)
    assert body["type"] == msg.TYPE and body["v"] == 1
    assert decode(text) == msg


def _bad(text: str, close_code: CloseCode) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(text)
    assert info.value.close_code == close_code
    assert isinstance(info.value, Invalid)
    assert info.value.details["close_code"] == int(close_code)
    return info.value


def _msg(**fields) -> str:
    return json.dumps(fields)


def test_unknown_type_is_unsupported_data() -> None:
    _bad(_msg(type="teleport", v=1), CloseCode.UNSUPPORTED_DATA)


@pytest.mark.parametrize("version", [2, 0, None, "1", True])
def test_wrong_version_is_unsupported_data(version) -> None:
    fields = {"type": "ping", "nonce": 1}
    if version is not None:
        fields["v"] = version
    _bad(json.dumps(fields), CloseCode.UNSUPPORTED_DATA)


def test_unknown_field_names_the_field() -> None:
    err = _bad(_msg(type="ping", v=1, nonce=1, extra=2), CloseCode.PROTOCOL_ERROR)
    assert any("extra" in f for f in err.details["fields"])


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"type": "exec-start", "stream_id": 1, "argv": "ls -l"}, "exec-start.argv"),
        ({"type": "exec-start", "stream_id": "1", "argv": ["ls"]}, "exec-start.stream_id"),
        ({"type": "exec-start", "stream_id": 1, "argv": ["ls"], "tty": 1}, "exec-start.tty"),
        ({"type": "exec-start", "stream_id": 1, "argv": [1]}, "exec-start.argv[0]"),
        ({"type": "exec-start", "stream_id": 1, "argv": ["ls"], "env": {"A": 1}}, "exec-start.env"),
        ({"type": "signal", "stream_id": 1, "name": "USR1"}, "signal.name"),
        ({"type": "credit", "stream_id": 1, "bytes": True}, "credit.bytes"),
        ({"type": "welcome"}, "welcome.session_id"),
    ],
)
def test_wrong_field_type_names_the_path(fields, path) -> None:
    err = _bad(json.dumps({"v": 1, **fields}), CloseCode.PROTOCOL_ERROR)
    assert any(path in f for f in err.details["fields"]), err.details


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "exec-start", "stream_id": 1, "argv": []},
        {"type": "exec-start", "stream_id": -1, "argv": ["ls"]},
        {"type": "exec-start", "stream_id": 2**32, "argv": ["ls"]},
        {"type": "exec-start", "stream_id": 1, "argv": ["ls"], "timeout": 0},
        {"type": "exec-start", "stream_id": 1, "argv": ["ls"], "rows": 0},
        {"type": "credit", "stream_id": 1, "bytes": 0},
        {"type": "exec-exit", "stream_id": 1},
        {"type": "exec-exit", "stream_id": 1, "code": 0, "signal": "KILL"},
        {"type": "response", "request_id": "r", "result": 1, "error": {"code": "x", "message": ""}},
    ],
)
def test_invalid_values_are_rejected(fields) -> None:
    _bad(json.dumps({"v": 1, **fields}), CloseCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"v": 1}',
        '{"type": 5, "v": 1}',
        '{"type": "ping", "v": 1, "nonce": 1, "nonce": 2}',
        '{"type": "heartbeat", "v": 1, "uptime": NaN}',
    ],
)
def test_malformed_frames_are_protocol_errors(text: str) -> None:
    _bad(text, CloseCode.PROTOCOL_ERROR)


def test_oversize_text_is_refused_before_parsing() -> None:
    _bad('{"type": "ping", "v": 1, "x": "' + "a" * 2_000_000 + '"}', CloseCode.MESSAGE_TOO_BIG)


def test_data_frame_round_trip() -> None:
    frame = encode_data(2**32 - 1, Channel.STDERR, 2**64 - 1, b"payload")
    assert len(frame) == HEADER_SIZE + 7 == 20
    decoded = decode_data(frame)
    assert (decoded.stream_id, decoded.channel, decoded.seq, decoded.payload) == (
        2**32 - 1,
        Channel.STDERR,
        2**64 - 1,
        b"payload",
    )
    assert decode_data(encode_data(1, Channel.LOG, 0, b"")).payload == b""


def test_data_frame_header_layout_is_big_endian() -> None:
    assert encode_data(1, Channel.STDOUT, 2, b"x") == bytes.fromhex(
        "00000001 01 0000000000000002 78"
    )


@pytest.mark.parametrize("size", [0, 1, HEADER_SIZE - 1])
def test_short_data_frame(size: int) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_data(b"\0" * size)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_unknown_channel() -> None:
    frame = bytearray(encode_data(1, Channel.STDOUT, 0, b"x"))
    frame[4] = 9
    with pytest.raises(ProtocolError) as info:
        decode_data(bytes(frame))
    assert info.value.close_code == CloseCode.UNSUPPORTED_DATA


def test_oversize_payload() -> None:
    with pytest.raises(ProtocolError) as info:
        encode_data(1, Channel.STDOUT, 0, b"x" * (MAX_PAYLOAD + 1))
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(ProtocolError):
        decode_data(b"\0" * (HEADER_SIZE + MAX_PAYLOAD + 1))


@pytest.mark.parametrize(("sid", "seq"), [(-1, 0), (2**32, 0), (0, -1), (0, 2**64)])
def test_out_of_range_header_fields(sid: int, seq: int) -> None:
    with pytest.raises(ProtocolError):
        encode_data(sid, Channel.STDOUT, seq, b"")
