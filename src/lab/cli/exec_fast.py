"""``labctl exec server/NAME -- CMD`` on one server, on blocking stdlib sockets.

A fresh ``labctl exec`` spent most of its time importing what the trio client stands on (trio,
trio-websocket, wsproto, h11, attrs and cattrs for lab.proto, yaml for the settings): 420 ms of
imports against a round trip of ~40 ms. This driver runs the same stream protocol
(docs/protocol.md) with :mod:`ssl`, :func:`select.poll` and the sans-IO WebSocket of
:mod:`lab.client.wscore`, one thread (a second only while stdout cannot take a write). What it
does is :func:`lab.cli.exec_run.run_exec`'s ``_single``: the same request, credit, signals
(Ctrl-C interrupts, a second one kills, SIGTERM and SIGHUP are forwarded, SIGWINCH resizes a
tty), exit codes and error words (shared through :mod:`lab.client.wserrors`).

Control messages are checked against their exact expected shape here; anything else goes
through :func:`lab.proto.messages.decode`, the one strict decoder, which either says what is
wrong in its own words or hands back a message handled like the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
from typing import Any

from lab.cli.exec_io import Closed, Connection, Output, Signals, wait_readable
from lab.cli.exec_run import READ_SIZE, exit_status, parse_env, raw_terminal, window_size
from lab.client import wscore
from lab.client.wserrors import closed, identity_ssl_context, lab_error, ws_url
from lab.errors import LabError, Unavailable

# lab.proto.frames / lab.proto.messages / lab.proto.streams (tests/cli/test_exec_fast.py keeps
# them equal: lab.proto imports cattrs).
HEADER = struct.Struct(">IBQ")
MAX_PAYLOAD = 1024 * 1024
MAX_STREAM_ID = 2**32 - 1
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 256 * 1024
GROWN_WINDOW = 4 * 1024 * 1024
VERSION = 1
STDIN, STDOUT, STDERR, LOG = 0, 1, 2, 3
_CHANNELS = {0: "STDIN", 1: "STDOUT", 2: "STDERR", 3: "LOG"}
# Close codes (lab.proto.errors.CloseCode).
_PROTOCOL_ERROR = 1002
_UNSUPPORTED_DATA = 1003
_TOO_BIG = 1009
_FLOW_CONTROL = 4002
_SEQUENCE = 4003


def run_fast(
    target: str,
    argv: list[str],
    *,
    stdin: bool,
    tty: bool,
    timeout: str | None = None,
    env: list[str] | None = None,
    cwd: str | None = None,
) -> int:
    """Run ``argv`` on server ``target`` as ``labctl exec`` does; returns labctl's exit code.

    Raises the LabError to print (a bad option, missing identity, labd's refusal, a closed
    stream) and BrokenPipeError once stdout is gone (the remote command is cancelled first).
    """
    from lab.client.durations import parse_duration
    from lab.client.quicksettings import quick_target

    # In lab.cli.exec_run.run_exec's order, so that the first error is the same.
    environment = parse_env(env or [])
    rows, cols = window_size() if tty else (24, 80)
    seconds = float(parse_duration(timeout, field="timeout")) if timeout else None
    request = exec_request(target, argv, stdin=stdin, tty=tty, rows=rows, cols=cols)
    request["params"]["start"].update(env=environment, cwd=cwd, timeout=seconds)
    found = quick_target()
    if found is None:  # only the full settings loader can tell (and may say what is wrong)
        from lab.client.contexts import identity_dir
        from lab.client.settings import load_settings

        server = load_settings().server
        context = identity_ssl_context(identity_dir())
    else:
        server, where = found
        context = identity_ssl_context(where)
    conn = Connection.open(server, ws_url(server, "/ws/exec"), context)
    try:
        return ExecSession(conn, stdin=stdin, tty=tty).run(request)
    finally:
        conn.close(1000)


def exec_request(
    target: str, argv: list[str], *, stdin: bool, tty: bool, rows: int, cols: int
) -> dict[str, Any]:
    """The request ``labctl exec`` sends for one server, as lab.proto.requests.to_request
    writes it (keepalive: we answer labd's pings)."""
    start: dict[str, Any] = {
        "argv": argv,
        "env": {},
        "cwd": None,
        "tty": tty,
        "rows": rows,
        "cols": cols,
        "stdin": stdin,
        "timeout": None,
        "output_cap": None,
    }
    return {
        "type": "request",
        "v": VERSION,
        "request_id": "1",
        "method": "exec",
        "params": {
            "start": start,
            "targets": [target],
            "labels": {},
            "parallel": 32,
            "keepalive": True,
        },
    }


def encode(kind: str, **fields: Any) -> bytes:
    """A control message as :func:`lab.proto.encode` writes it."""
    return json.dumps({"type": kind, "v": VERSION, **fields}, separators=(",", ":")).encode()


def _protocol(message: str, close_code: int = _PROTOCOL_ERROR) -> LabError:
    """lab.proto's ProtocolError (imported only when a peer broke the protocol)."""
    from lab.proto.errors import CloseCode, ProtocolError

    return ProtocolError(message, close_code=CloseCode(close_code))


class ExecSession:
    """The client half of one exec stream (lab.client.wsclient.StreamSession's, for one
    server): validates every frame and message, writes output, grants credit back as it is
    written, forwards stdin within labd's credit and the signals labctl receives."""

    def __init__(self, conn: Connection, *, stdin: bool, tty: bool) -> None:
        self.conn = conn
        self.tty = tty
        self.output = Output()
        self.stream_id = -1
        # labd -> us: what labd may still send, what we wrote and have not granted back.
        self.window = DEFAULT_WINDOW
        self.outstanding = DEFAULT_WINDOW
        self.unacknowledged = 0
        self.seq: dict[int, int] = {}
        self.bytes_in = 0
        # us -> labd
        self.stdin_open = stdin
        self.stdin_credit = DEFAULT_WINDOW
        self.stdin_seq = 0
        self.interrupts = 0
        self.exit: dict[str, Any] | None = None
        self.ended = False
        self.error: LabError | None = None

    @property
    def done(self) -> bool:
        return self.exit is not None or self.ended or self.error is not None

    def run(self, request: dict[str, Any]) -> int:
        """Send ``request``, run the stream to its end; labctl's exit code."""
        self.conn.send_text(json.dumps(request, separators=(",", ":")).encode())
        self._open()
        restore = raw_terminal() if self.tty else None
        try:
            with Signals(self.tty) as signals:
                try:
                    self._loop(signals)
                    while self.output.pending:  # output queued past the end is still written
                        wait_readable([self.output.wakeup_fd])
                        self.output.done()
                    self.output.done()
                except BrokenPipeError:
                    self._cancel()
                    raise
        finally:
            if restore is not None:
                restore()
        if self.error is not None:
            raise self.error
        if self.exit is None:
            return 1
        return exit_status(self.exit["code"], self.exit["signal"], self.exit["bytes_dropped"])

    def _open(self) -> None:
        items: list[tuple[int, bytes]] = []
        while not items:
            try:
                items = self.conn.receive()
            except Closed as exc:
                raise closed(exc.code, exc.reason) from None
            if not items:
                wait_readable([self.conn.fileno()])
        opcode, payload = items[0]
        if opcode == wscore.BINARY:
            raise Unavailable("labd sent data before answering the request")
        msg = self._decode(payload)
        if msg["type"] != "response":
            raise Unavailable(f"labd answered with {msg['type']!r} instead of a response")
        error = msg.get("error")
        if error is not None:
            raise lab_error(error["code"], error["message"], dict(error.get("details") or {}))
        result = msg.get("result")
        entries = result.get("streams", []) if isinstance(result, dict) else []
        if len(entries) != 1:
            raise Unavailable(f"labd opened {len(entries)} streams for one server")
        self.stream_id = int(entries[0]["stream_id"])
        if self.stream_id <= 0:
            raise _protocol(f"stream {self.stream_id} was already started")
        # One stream: the whole grown window (lab.proto.streams.grown_window(1)).
        self.window = GROWN_WINDOW
        self.outstanding = GROWN_WINDOW
        # labd may have ended the stream and closed already: the next read reports that.
        with contextlib.suppress(OSError):
            self._send("credit", stream_id=self.stream_id, bytes=GROWN_WINDOW - DEFAULT_WINDOW)
        for opcode, payload in items[1:]:
            if self.done:
                break  # as in the loop: nothing is read past the end
            self._handle(opcode, payload)

    def _loop(self, signals: Signals) -> None:
        sock = self.conn.fileno()
        while not self.done:
            fds = [sock, signals.fd]
            if self.output.wakeup_fd >= 0:
                fds.append(self.output.wakeup_fd)
            reading_stdin = self.stdin_open and self.stdin_credit > 0
            if reading_stdin:
                fds.append(0)
            ready = {sock} if self.conn.sock.pending() else wait_readable(fds)
            if signals.fd in ready:
                self._signals(signals.take())
            self._granted(self.output.done())
            if sock in ready:
                try:
                    items = self.conn.receive()
                except Closed as exc:
                    self.error = closed(exc.code, exc.reason)
                    return
                for opcode, payload in items:
                    if self.done:
                        break  # as the trio client: nothing is read past the end
                    self._handle(opcode, payload)
            if 0 in ready and not self.done:
                self._pump_stdin()

    def _handle(self, opcode: int, payload: bytes) -> None:
        if opcode == wscore.BINARY:
            self._data(payload)
            return
        msg = self._decode(payload)
        kind = msg["type"]
        if kind == "ping":
            self._send("pong", nonce=msg["nonce"])
            return
        if kind == "error" and msg.get("stream_id") is None:
            raise lab_error(msg["code"], msg["message"])
        stream_id = msg.get("stream_id")
        if stream_id != self.stream_id:
            raise Unavailable(f"labd sent a message for unknown stream {stream_id}")
        if kind == "exec-started":
            pass
        elif kind == "credit":
            grant = msg["bytes"]
            if grant <= 0 or self.stdin_credit + grant > MAX_WINDOW:
                raise _protocol(f"credit of {grant} bytes is out of range", _FLOW_CONTROL)
            self.stdin_credit += grant
        elif kind == "exec-exit":
            if msg["bytes_out"] != self.bytes_in:
                raise _protocol(
                    f"stream {stream_id} announced {msg['bytes_out']} bytes, "
                    f"{self.bytes_in} arrived",
                    _SEQUENCE,
                )
            self.exit = msg
        elif kind == "logs-end":
            self.ended = True
        elif kind == "error":
            self.error = lab_error(msg["code"], msg["message"])
        else:
            raise Unavailable(f"labd sent an unexpected {kind!r} message")

    def _data(self, frame: bytes) -> None:
        """One binary frame (lab.proto.frames.decode_data, then InputStream.received)."""
        size = HEADER.size
        if len(frame) < size:
            raise _protocol(f"data frame of {len(frame)} bytes is shorter than its header")
        if len(frame) - size > MAX_PAYLOAD:
            raise _protocol(f"data frame payload exceeds {MAX_PAYLOAD} bytes", _TOO_BIG)
        stream_id, channel, seq = HEADER.unpack_from(frame)
        if channel not in _CHANNELS:
            raise _protocol(f"unknown data channel {channel}", _UNSUPPORTED_DATA)
        if stream_id != self.stream_id:
            raise Unavailable(f"labd sent a message for unknown stream {stream_id}")
        expected = self.seq.get(channel, 0)
        if seq != expected:
            kind = "duplicate" if seq < expected else "gap"
            raise _protocol(
                f"sequence {kind} on stream {stream_id} channel {_CHANNELS[channel]}: "
                f"got {seq}, expected {expected}",
                _SEQUENCE,
            )
        self.seq[channel] = expected + 1
        length = len(frame) - size
        if length > self.outstanding:
            raise _protocol(
                f"peer sent {length} bytes with only {self.outstanding} bytes of credit",
                _FLOW_CONTROL,
            )
        self.outstanding -= length
        self.bytes_in += length
        self.output.write(STDERR if channel == STDERR else STDOUT, frame[size:])
        self._granted(self.output.done())

    def _granted(self, written: int) -> None:
        """Give back credit for output written, half a window at a time
        (lab.proto.streams.ReceiveWindow.consumed)."""
        self.unacknowledged += written
        if not written or self.unacknowledged * 2 < self.window:
            return
        grant, self.unacknowledged = self.unacknowledged, 0
        self.outstanding += grant
        if not self.done:  # an ended stream gets nothing more; labd may have closed already
            # A closed connection: the next read reports it.
            with contextlib.suppress(OSError):
                self._send("credit", stream_id=self.stream_id, bytes=grant)

    def _pump_stdin(self) -> None:
        chunk = os.read(0, min(READ_SIZE, self.stdin_credit, MAX_PAYLOAD))
        if not chunk:
            self.stdin_open = False
            self._send("stdin-close", stream_id=self.stream_id)
            return
        self.stdin_credit -= len(chunk)
        frame = HEADER.pack(self.stream_id, STDIN, self.stdin_seq) + chunk
        self.stdin_seq += 1
        self.conn.send(wscore.BINARY, frame)

    def _signals(self, received: list[int]) -> None:
        """Ctrl-C interrupts the remote group (a second one kills it); SIGWINCH resizes."""
        for signum in received:
            if signum == signal.SIGWINCH:
                rows, cols = window_size()
                self._send("resize", stream_id=self.stream_id, rows=rows, cols=cols)
                continue
            if signum == signal.SIGINT:
                self.interrupts += 1
                name = "INT" if self.interrupts == 1 else "KILL"
            else:
                name = "TERM" if signum == signal.SIGTERM else "HUP"
            if not self.done:
                self._send("signal", stream_id=self.stream_id, name=name)

    def _cancel(self) -> None:
        """Our stdout is gone: tell labd to cancel the command (BrokenPipeError follows)."""
        if self.done:
            return
        with contextlib.suppress(OSError):
            self._send("stream-cancel", stream_id=self.stream_id)

    def _send(self, kind: str, **fields: Any) -> None:
        self.conn.send_text(encode(kind, **fields))

    def _decode(self, payload: bytes) -> dict[str, Any]:
        msg = quick_decode(payload)
        if msg is not None:
            return msg
        from lab.proto.messages import decode, unstructure

        typed = decode(payload.decode("utf-8", "replace"))
        return {"type": typed.TYPE, **unstructure(typed)}


def _sid(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_STREAM_ID


def _int(value: Any) -> bool:
    return type(value) is int


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _text(value: Any) -> bool:
    return type(value) is str


def _maybe(check: Any) -> Any:
    return lambda value: value is None or check(value)


def _rpc_error(value: Any) -> bool:
    return value is None or (
        type(value) is dict
        and set(value) <= {"code", "message", "details"}
        and _text(value.get("code"))
        and _text(value.get("message"))
        and type(value.get("details", {})) is dict
    )


# The messages labd sends on /ws/exec: each field's check and default (lab.proto.messages);
# a required field has no default (_REQUIRED).
_REQUIRED = object()
_SHAPES: dict[str, dict[str, tuple[Any, Any]]] = {
    "response": {
        "request_id": (_text, _REQUIRED),
        "result": (lambda value: True, None),
        "error": (_rpc_error, None),
    },
    "exec-started": {"stream_id": (_sid, _REQUIRED), "pid": (_int, _REQUIRED)},
    "credit": {
        "stream_id": (_sid, _REQUIRED),
        "bytes": (lambda value: type(value) is int and value > 0, _REQUIRED),
    },
    "exec-exit": {
        "stream_id": (_sid, _REQUIRED),
        "code": (_maybe(_int), None),
        "signal": (_maybe(_text), None),
        "bytes_out": (_count, 0),
        "bytes_dropped": (_count, 0),
        "timed_out": (lambda value: type(value) is bool, False),
    },
    "error": {
        "stream_id": (_maybe(_sid), None),
        "code": (_text, _REQUIRED),
        "message": (_text, _REQUIRED),
    },
    "ping": {"nonce": (_int, 0)},
    "logs-end": {"stream_id": (_sid, _REQUIRED)},
}


def quick_decode(payload: bytes) -> dict[str, Any] | None:
    """A control message of an expected kind and exact shape, with its defaults filled in;
    None for anything else (lab.proto.messages.decode then decides)."""
    if payload.count(b"{") + payload.count(b"[") > 16:  # nesting: lab.proto's limit is 32
        return None
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            duplicates.append("")
        return out

    try:
        data = json.loads(payload, object_pairs_hook=pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if duplicates or type(data) is not dict:
        return None
    kind = data.pop("type", None)
    shape = _SHAPES.get(kind) if type(kind) is str else None
    if shape is None or data.pop("v", None) != VERSION or not set(data) <= set(shape):
        return None
    out: dict[str, Any] = {"type": kind}
    for name, (check, default) in shape.items():
        if name in data:
            if not check(data[name]):
                return None
            out[name] = data[name]
        elif default is _REQUIRED:
            return None
        else:
            out[name] = default
    if kind == "exec-exit" and (out["code"] is None) == (out["signal"] is None):
        return None
    if kind == "response" and out["error"] is not None and out["result"] is not None:
        return None
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


__all__ = ["ExecSession", "quick_decode", "run_fast"]
