"""The fast labctl exec speaks lab.proto without importing it: its messages, constants and
checks against lab.proto's, and its settings reader against lab.client.settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from lab.cli import exec_fast, exec_io
from lab.client import quicksettings, wserrors
from lab.client.contexts import identity_dir
from lab.client.settings import CliSettings, load_settings
from lab.errors import LabError
from lab.proto import CloseCode, ProtocolError, decode, encode, frames
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    LogsEnd,
    Ping,
    Pong,
    Resize,
    Response,
    RpcError,
    Signal,
    SignalName,
    StdinClose,
    StreamCancel,
    unstructure,
)
from lab.proto.requests import ExecRequest, to_request
from lab.proto.streams import MAX_WINDOW, grown_window


def test_constants_are_lab_protos() -> None:
    assert exec_fast.HEADER.format == frames.HEADER.format
    assert exec_fast.MAX_PAYLOAD == frames.MAX_PAYLOAD
    assert exec_io.MAX_MESSAGE == frames.MAX_PAYLOAD + frames.HEADER_SIZE
    assert exec_fast.MAX_STREAM_ID == frames.MAX_STREAM_ID
    assert exec_fast.DEFAULT_WINDOW == DEFAULT_WINDOW
    assert grown_window(1) == exec_fast.GROWN_WINDOW
    assert exec_fast.MAX_WINDOW == MAX_WINDOW
    assert {v: k for k, v in exec_fast._CHANNELS.items()} == {c.name: c for c in frames.Channel}
    codes = (
        (exec_fast._PROTOCOL_ERROR, CloseCode.PROTOCOL_ERROR),
        (exec_fast._UNSUPPORTED_DATA, CloseCode.UNSUPPORTED_DATA),
        (exec_fast._TOO_BIG, CloseCode.MESSAGE_TOO_BIG),
        (exec_fast._FLOW_CONTROL, CloseCode.FLOW_CONTROL),
        (exec_fast._SEQUENCE, CloseCode.SEQUENCE),
        (wserrors.REVOKED, CloseCode.REVOKED),
    )
    for ours, theirs in codes:
        assert ours == theirs
    assert attrs.asdict(CliSettings()) == quicksettings.DEFAULTS


@pytest.mark.parametrize(("stdin", "tty"), [(False, False), (True, True)])
def test_the_request_is_to_requests(stdin: bool, tty: bool) -> None:
    start = ExecStart(stream_id=0, argv=["sh", "-c", "a\tb"], tty=tty, stdin=stdin, rows=50)
    request = ExecRequest(targets=["web1"], start=start, keepalive=True)
    ours = exec_fast.exec_request(
        "web1", ["sh", "-c", "a\tb"], stdin=stdin, tty=tty, rows=50, cols=80
    )
    assert json.dumps(ours) == json.dumps(json.loads(encode(to_request(request))))


@pytest.mark.parametrize(
    "msg",
    [
        Credit(stream_id=1, bytes=4096),
        Pong(nonce=7),
        StdinClose(stream_id=1),
        Resize(stream_id=1, rows=40, cols=120),
        Signal(stream_id=1, name=SignalName.INT),
        StreamCancel(stream_id=1),
    ],
)
def test_what_we_send_is_encoded_as_lab_proto_does(msg: Any) -> None:
    fields = unstructure(msg)
    assert exec_fast.encode(msg.TYPE, **fields).decode() == encode(msg)


@pytest.mark.parametrize(
    "msg",
    [
        Response(request_id="1", result={"streams": [{"stream_id": 1, "server": "web1"}]}),
        Response(
            request_id="1",
            error=RpcError(code="not_found", message="no server", details={"hint": "x"}),
        ),
        ExecStarted(stream_id=1, pid=42),
        Credit(stream_id=1, bytes=1),
        ExecExit(stream_id=1, code=0, bytes_out=10),
        ExecExit(stream_id=1, signal="KILL", bytes_dropped=3, timed_out=True),
        Error(stream_id=1, code="command_not_found", message="nope"),
        Error(code="unavailable", message="going"),
        Ping(nonce=3),
        LogsEnd(stream_id=1),
    ],
)
def test_what_labd_sends_is_read_as_lab_proto_reads_it(msg: Any) -> None:
    got = exec_fast.quick_decode(encode(msg).encode())
    assert got == {"type": msg.TYPE, **unstructure(msg)}


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"credit","v":1,"stream_id":1,"bytes":0}',
        '{"type":"credit","v":1,"stream_id":1,"bytes":true}',
        '{"type":"credit","v":1,"stream_id":1,"stream_id":2,"bytes":5}',
        '{"type":"credit","v":1,"stream_id":1,"bytes":5,"more":1}',
        '{"type":"credit","v":2,"stream_id":1,"bytes":5}',
        '{"type":"exec-exit","v":1,"stream_id":1}',
        '{"type":"exec-exit","v":1,"stream_id":1,"code":0,"signal":"KILL"}',
        '{"type":"exec-exit","v":1,"stream_id":1,"code":0,"bytes_out":NaN}',
        '{"type":"ping","v":1,"nonce":1.5}',
        '{"type":"error","v":1,"code":"x"}',
        '{"type":"response","v":1,"request_id":"1",' + '"result":' + "[" * 40 + "]" * 40 + "}",
        '["type"]',
        "not json",
    ],
)
def test_anything_else_is_left_to_lab_proto(text: str) -> None:
    """quick_decode declines; lab.proto's decode then raises its own ProtocolError."""
    assert exec_fast.quick_decode(text.encode()) is None
    with pytest.raises(ProtocolError):
        decode(text)


def test_a_declined_message_lab_proto_accepts_is_handled_like_the_others() -> None:
    text = '{"type":"exec-started","v":1,"stream_id":1,"pid":42}'
    session = exec_fast.ExecSession.__new__(exec_fast.ExecSession)
    assert session._decode(text.encode()) == {"type": "exec-started", "stream_id": 1, "pid": 42}
    # A float pid lab.proto turns into an int: quick_decode leaves it to lab.proto.
    looser = '{"type":"exec-started","v":1,"stream_id":1,"pid":42.0}'
    assert exec_fast.quick_decode(looser.encode()) is None
    try:
        expected = {"type": "exec-started", **unstructure(decode(looser))}
    except ProtocolError as exc:
        with pytest.raises(ProtocolError, match=str(exc.message)):
            session._decode(looser.encode())
    else:
        assert session._decode(looser.encode()) == expected


def test_error_words() -> None:
    err = wserrors.closed(4005, "certificate revoked")
    assert (err.code, err.message) == (
        "unauthenticated",
        "labd ended the session: certificate revoked",
    )
    err = wserrors.closed(1006, None)
    assert (err.code, err.message) == (
        "unavailable",
        "labd closed the stream (1006: connection closed)",
    )
    body = b'{"error": {"code": "permission_denied", "message": "no", "details": {"a": 1}}}'
    err = wserrors.rejected(403, body)
    assert (err.code, err.message, err.details) == ("permission_denied", "no", {"a": 1})
    assert wserrors.rejected(401, b"junk").details["hint"].startswith("run `labctl login")
    assert type(wserrors.rejected(599, b"")) is LabError


# --- settings -----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in [
        "LABCTL_CONFIG",
        "LABCTL_CONTEXT",
        "LABCTL_SERVER",
        "LABCTL_OUTPUT",
        "LABCTL_TIMEOUT",
        "LABCTL_BASTION",
        "LABCTL_CA_FINGERPRINT",
    ]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABCTL_HOME", str(tmp_path))
    return tmp_path


def both(home: Path) -> tuple[tuple[str, Path] | None, tuple[str, Path] | str]:
    """(quick_target's answer, the full loaders' answer or the error they raise)."""
    quick = quicksettings.quick_target()
    try:
        full: tuple[str, Path] | str = (load_settings().server, identity_dir())
    except LabError as exc:
        full = exc.message
    return quick, full


FP = "SHA256:" + "ab" * 32


@pytest.mark.parametrize(
    ("config", "env"),
    [
        ("", {}),
        ("# labctl\n\nserver: https://lab.example:3100\ntimeout: 12.5\n", {}),
        (f"server: https://a.example\nca_fingerprint: {FP}\noutput: json\n", {}),
        ("server: https://a.example\n", {"LABCTL_SERVER": "https://b.example:4000"}),
        ("timeout: 30\n", {"LABCTL_TIMEOUT": "2m"}),
        ("bastion: http://pxe.example:8080\n", {"LABCTL_OUTPUT": "wide"}),
    ],
)
def test_plain_settings_are_read_as_the_loader_reads_them(
    home: Path, monkeypatch: pytest.MonkeyPatch, config: str, env: dict[str, str]
) -> None:
    (home / "config.yaml").write_text(config)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    quick, full = both(home)
    assert quick is not None
    assert quick == full


def test_a_context_is_read_as_the_loader_reads_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = home / "contexts" / "lab1"
    ctx.mkdir(parents=True)
    (ctx / "context.yaml").write_text(f"ca_fingerprint: {FP}\nserver: https://one.example\n")
    (home / "config.yaml").write_text("context: lab1\nserver: https://other.example\n")
    quick, full = both(home)
    assert quick == full == ("https://one.example", ctx)
    monkeypatch.setenv("LABCTL_SERVER", "https://env.example")
    quick, full = both(home)
    assert quick == full == ("https://env.example", ctx)


@pytest.mark.parametrize(
    "config",
    [
        "server: 'https://quoted.example'\n",  # quoted: YAML's rules
        "server: https://a.example # comment\n",
        "server: [https://a.example]\n",
        "server: https://a.example\nserver: https://b.example\n",
        "colour: blue\n",  # an unknown key: the loader names the valid ones
        "output: yes\n",  # a YAML boolean
        "server: ftp://a.example\n",  # a value that does not check
        "timeout: 0\n",
        "timeout: 5m\n",  # a duration in the file: the loader says it is not a number
        "context: 'no such'\n",
        "context: missing\n",  # no such context: the loader says so
        "  server: https://a.example\n",
    ],
)
def test_anything_else_is_left_to_the_loader(home: Path, config: str) -> None:
    (home / "config.yaml").write_text(config)
    quick, _ = both(home)
    assert quick is None


def test_an_identity_to_move_into_a_context_is_left_to_the_loader(home: Path) -> None:
    ctx = home / "contexts" / "lab1"
    ctx.mkdir(parents=True)
    (home / "config.yaml").write_text("context: lab1\n")
    (home / "cert.pem").write_text("legacy")
    assert quicksettings.quick_target() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("a: b\n", {"a": "b"}),
        ("a: 1.5\nb: 10\n", {"a": 1.5, "b": 10.0}),
        ("a: 010\n", None),  # YAML 1.1 octal
        ("a: 1:20\n", None),  # YAML 1.1 sexagesimal
        ("a: on\n", None),
        ("a: Null\n", None),
        ("a: .inf\n", None),
        ("a:\n", None),
        ("---\na: b\n", None),
    ],
)
def test_plain_mapping(tmp_path: Path, text: str, expected: dict[str, Any] | None) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert quicksettings.plain_mapping(path) == expected
    if expected is not None:
        import yaml

        assert (yaml.safe_load(text) or {}) == expected
    assert quicksettings.plain_mapping(tmp_path / "absent.yaml") == {}
