"""Wire messages between agent, labd and CLI: a versioned tagged union of JSON text frames.

Every control message is one JSON object ``{"type": "<tag>", "v": 1, ...fields}``. Decoding is
strict: unknown types, versions or fields, wrong field types, duplicate keys and non-finite
numbers raise :class:`~lab.proto.errors.ProtocolError` with the close code to use. Stream bytes
travel in binary frames (:mod:`lab.proto.frames`).
"""

from __future__ import annotations

import enum
import json
from typing import Any, ClassVar, TypeVar

import cattrs
from attrs import Factory, field, frozen
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.v import format_exception, transform_error

from lab.model.converter import make_converter
from lab.model.facts import Facts
from lab.model.safejson import MAX_DEPTH, nesting_exceeds
from lab.model.text import Arg, Name
from lab.proto.errors import CloseCode, ProtocolError
from lab.proto.frames import MAX_STREAM_ID, Channel, DataFrame, decode_data, encode_data

VERSION = 1
_T = TypeVar("_T")
DEFAULT_WINDOW = 256 * 1024
# A text frame larger than this is not a control message; refuse before parsing it.
MAX_TEXT = 1024 * 1024

__all__ = [
    "DEFAULT_WINDOW",
    "MESSAGE_TYPES",
    "VERSION",
    "Channel",
    "Credit",
    "DataFrame",
    "Error",
    "ExecExit",
    "ExecStart",
    "ExecStarted",
    "Heartbeat",
    "Hello",
    "LogsEnd",
    "LogsStart",
    "Message",
    "Ping",
    "Pong",
    "Request",
    "Resize",
    "Response",
    "RpcError",
    "ServerShutdown",
    "Signal",
    "SignalName",
    "StdinClose",
    "StreamCancel",
    "Welcome",
    "decode",
    "decode_data",
    "encode",
    "encode_data",
]


# --- field validators (attrs runs them on construction, so decoding enforces them too) ---


def _stream_id(_: Any, attribute: Any, value: int) -> None:
    if not 0 <= value <= MAX_STREAM_ID:
        raise ValueError(f"{attribute.name} must be between 0 and {MAX_STREAM_ID}")


def _positive(_: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


def _positive_int(_: Any, attribute: Any, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


def _non_negative(_: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


def _window_size(_: Any, attribute: Any, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be between 1 and 65535")


def _non_empty(_: Any, attribute: Any, value: list[str]) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


class SignalName(enum.StrEnum):
    """Signals a client may forward to a remote process group."""

    INT = "INT"
    TERM = "TERM"
    KILL = "KILL"
    HUP = "HUP"


# --- session ---


@frozen(kw_only=True)
class Hello:
    """Agent → labd, first message on a new connection."""

    TYPE: ClassVar[str] = "hello"
    version: Name
    # Bounded and checked (lab.model.facts): an agent cannot store megabytes or odd text.
    facts: Facts = Factory(dict)
    labels: dict[Name, Name] = Factory(dict)


@frozen(kw_only=True)
class Welcome:
    """labd → agent, answer to ``hello``: the session is established."""

    TYPE: ClassVar[str] = "welcome"
    session_id: str
    heartbeat_interval: float = field(default=10.0, validator=_positive)


@frozen(kw_only=True)
class Heartbeat:
    """Agent → labd every ``heartbeat_interval`` seconds; small facts only."""

    TYPE: ClassVar[str] = "heartbeat"
    load: list[float] = Factory(list)
    uptime: float = field(default=0.0, validator=_non_negative)
    memory_total: int = field(default=0, validator=_non_negative)
    memory_available: int = field(default=0, validator=_non_negative)
    version: Name = ""


@frozen(kw_only=True)
class ServerShutdown:
    """labd → agent/CLI: the server is going away; reconnect no sooner than ``retry_after``."""

    TYPE: ClassVar[str] = "server-shutdown"
    retry_after: float = field(default=1.0, validator=_non_negative)
    reason: str = ""


@frozen(kw_only=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    nonce: int = 0


@frozen(kw_only=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    nonce: int = 0


# --- exec ---


@frozen(kw_only=True)
class ExecStart:
    """Run ``argv`` (never a shell string) as stream ``stream_id``."""

    TYPE: ClassVar[str] = "exec-start"
    stream_id: int = field(validator=_stream_id)
    # Tab and newline are allowed in arguments (scripts); other control characters are not.
    argv: list[Arg] = field(validator=_non_empty)
    env: dict[Name, Arg] = Factory(dict)
    cwd: str | None = None
    tty: bool = False
    rows: int = field(default=24, validator=_window_size)
    cols: int = field(default=80, validator=_window_size)
    stdin: bool = False
    timeout: float | None = field(default=None, validator=_positive)
    output_cap: int | None = field(default=None, validator=_non_negative)


@frozen(kw_only=True)
class ExecStarted:
    TYPE: ClassVar[str] = "exec-started"
    stream_id: int = field(validator=_stream_id)
    pid: int


@frozen(kw_only=True)
class StdinClose:
    """No more stdin for this stream (EOF; a ``^D`` in tty mode)."""

    TYPE: ClassVar[str] = "stdin-close"
    stream_id: int = field(validator=_stream_id)


@frozen(kw_only=True)
class Resize:
    TYPE: ClassVar[str] = "resize"
    stream_id: int = field(validator=_stream_id)
    rows: int = field(validator=_window_size)
    cols: int = field(validator=_window_size)


@frozen(kw_only=True)
class Signal:
    """Deliver a signal to the remote process group."""

    TYPE: ClassVar[str] = "signal"
    stream_id: int = field(validator=_stream_id)
    name: SignalName


@frozen(kw_only=True)
class Credit:
    """The sender of this message accepts ``bytes`` more payload bytes on ``stream_id``."""

    TYPE: ClassVar[str] = "credit"
    stream_id: int = field(validator=_stream_id)
    bytes: int = field(validator=_positive_int)


@frozen(kw_only=True)
class ExecExit:
    """Last message of an exec stream, sent only after stdout and stderr reached EOF.

    Exactly one of ``code`` (normal exit) and ``signal`` (name without ``SIG``) is set.
    ``bytes_out`` counts payload bytes sent on stdout+stderr, ``bytes_dropped`` those discarded
    past the output cap.
    """

    TYPE: ClassVar[str] = "exec-exit"
    stream_id: int = field(validator=_stream_id)
    code: int | None = None
    signal: str | None = None
    bytes_out: int = field(default=0, validator=_non_negative)
    bytes_dropped: int = field(default=0, validator=_non_negative)
    timed_out: bool = False

    def __attrs_post_init__(self) -> None:
        if (self.code is None) == (self.signal is None):
            raise ValueError("exactly one of code and signal must be set")


@frozen(kw_only=True)
class Error:
    """An error on one stream (``stream_id`` set) or on the connection."""

    TYPE: ClassVar[str] = "error"
    stream_id: int | None = None
    code: str
    message: str


# --- logs ---


@frozen(kw_only=True)
class LogsStart:
    """Stream log lines (channel 3) from the journal (``unit``) or a named file ``source``."""

    TYPE: ClassVar[str] = "logs-start"
    stream_id: int = field(validator=_stream_id)
    unit: str | None = None
    source: str | None = None
    since: float | None = field(default=None, validator=_non_negative)
    lines: int | None = field(default=None, validator=_non_negative)
    follow: bool = False


@frozen(kw_only=True)
class LogsEnd:
    TYPE: ClassVar[str] = "logs-end"
    stream_id: int = field(validator=_stream_id)


@frozen(kw_only=True)
class StreamCancel:
    """Stop stream ``stream_id`` (an exec is killed, a log stream stops)."""

    TYPE: ClassVar[str] = "stream-cancel"
    stream_id: int = field(validator=_stream_id)


# --- generic RPC ---


@frozen(kw_only=True)
class RpcError:
    code: str
    message: str
    details: dict[str, Any] = Factory(dict)


@frozen(kw_only=True)
class Request:
    TYPE: ClassVar[str] = "request"
    request_id: str
    method: str
    params: dict[str, Any] = Factory(dict)


@frozen(kw_only=True)
class Response:
    """Answer to :class:`Request`; exactly one of ``result`` and ``error``."""

    TYPE: ClassVar[str] = "response"
    request_id: str
    result: Any = None
    error: RpcError | None = None

    def __attrs_post_init__(self) -> None:
        if self.result is not None and self.error is not None:
            raise ValueError("a response carries a result or an error, not both")


Message = (
    Hello
    | Welcome
    | Heartbeat
    | ServerShutdown
    | Ping
    | Pong
    | ExecStart
    | ExecStarted
    | StdinClose
    | Resize
    | Signal
    | Credit
    | ExecExit
    | Error
    | LogsStart
    | LogsEnd
    | StreamCancel
    | Request
    | Response
)

MESSAGE_TYPES: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Welcome,
        Heartbeat,
        ServerShutdown,
        Ping,
        Pong,
        ExecStart,
        ExecStarted,
        StdinClose,
        Resize,
        Signal,
        Credit,
        ExecExit,
        Error,
        LogsStart,
        LogsEnd,
        StreamCancel,
        Request,
        Response,
    )
}


def _make_converter() -> cattrs.Converter:
    conv = make_converter()

    def _signal(value: Any, _: type) -> SignalName:
        try:
            return SignalName(value)
        except ValueError:
            raise ValueError(f"{value!r} is not one of: INT, TERM, KILL, HUP") from None

    # SignalName is a str subclass: without its own hook the strict str hook would accept any text.
    conv.register_structure_hook(SignalName, _signal)
    conv.register_structure_hook(Any, lambda v, _: v)
    return conv


_converter = _make_converter()


def encode(msg: Message) -> str:
    """The JSON text frame for ``msg``."""
    body = _converter.unstructure(msg)
    return json.dumps({"type": msg.TYPE, "v": VERSION, **body}, separators=(",", ":"))


def decode(text: str | bytes) -> Message:
    """Parse one text frame into its message; raises :class:`ProtocolError` when it is not one."""
    if len(text) > MAX_TEXT:
        raise ProtocolError("control message too large", close_code=CloseCode.MESSAGE_TOO_BIG)
    as_text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if nesting_exceeds(as_text, MAX_DEPTH):
        raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not a JSON message: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.pop("type", None)
    version = data.pop("v", None)
    if not isinstance(kind, str):
        raise ProtocolError("message has no type")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}", close_code=CloseCode.UNSUPPORTED_DATA)
    if version != VERSION or isinstance(version, bool):
        raise ProtocolError(
            f"unsupported version {version!r} of {kind!r} (this side speaks v{VERSION})",
            close_code=CloseCode.UNSUPPORTED_DATA,
        )
    msg: Message = structure(data, cls, kind)
    return msg


def structure(data: Any, cls: type[_T], kind: str) -> _T:
    """``data`` (parsed JSON) as a ``cls`` through the one converter; raises
    :class:`ProtocolError` naming the fields (paths from ``kind``) when it is not one."""
    try:
        return _converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
        fields = transform_error(exc, path=kind, format_exception=_describe)
        raise ProtocolError(f"malformed {kind!r} message", details={"fields": fields}) from None
    except (TypeError, ValueError, KeyError) as exc:
        raise ProtocolError(
            f"malformed {kind!r} message: {exc}", details={"fields": [f"{exc} @ {kind}"]}
        ) from None


def unstructure(value: Any) -> Any:
    """``value`` as plain JSON data, the way :func:`encode` writes it."""
    return _converter.unstructure(value)


def _describe(exc: BaseException, type_: type | None) -> str:
    # cattrs says only "invalid value" for a validator's ValueError; keep the validator's words.
    if type(exc) is ValueError and str(exc):
        return f"invalid value ({exc})"
    return format_exception(exc, type_)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
