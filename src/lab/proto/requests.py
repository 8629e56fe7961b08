"""The request that opens ``/ws/exec`` and ``/ws/logs``: a tagged union on the method.

On the wire it is a :class:`~lab.proto.messages.Request` whose ``method`` is the tag
(``exec`` or ``logs``) and whose ``params`` carry the targets and the start message without its
``type``, ``v`` and ``stream_id`` (labd numbers the streams 1..N)::

    {"type": "request", "v": 1, "request_id": "1", "method": "exec",
     "params": {"targets": ["web1"], "labels": {}, "parallel": 32, "keepalive": true,
                "start": {"argv": ["uname", "-a"], "tty": false, ...}}}

Both ends go through :func:`to_request` and :func:`from_request`, so the fields are checked
once, by the converter every other message uses.
"""

from __future__ import annotations

from typing import Any, ClassVar

from attrs import Factory, field, fields_dict, frozen

from lab.model.text import Name
from lab.proto.errors import ProtocolError
from lab.proto.messages import ExecStart, LogsStart, Request, structure, unstructure

DEFAULT_PARALLEL = 32
# Keys of the start message a request's template leaves to labd (an older client sent them).
_ENVELOPE = ("type", "v", "stream_id")


def _positive(_: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer")


def _non_empty_names(_: Any, attribute: Any, value: list[str]) -> None:
    if not all(value):
        raise ValueError(f"{attribute.name} must be server names (none empty)")


@frozen(kw_only=True)
class ExecRequest:
    """Run ``start`` on each named server and each server matching ``labels``."""

    METHOD: ClassVar[str] = "exec"
    start: ExecStart
    targets: list[Name] = field(factory=list, validator=_non_empty_names)
    labels: dict[Name, Name] = Factory(dict)
    parallel: int = field(default=DEFAULT_PARALLEL, validator=_positive)
    # The client answers labd's pings (and may be ended when it stops answering).
    keepalive: bool = False


@frozen(kw_only=True)
class LogsRequest:
    """Stream ``start``'s logs from one named server."""

    METHOD: ClassVar[str] = "logs"
    start: LogsStart
    targets: list[Name] = field(factory=list, validator=_non_empty_names)
    labels: dict[Name, Name] = Factory(dict)
    parallel: int = field(default=DEFAULT_PARALLEL, validator=_positive)
    keepalive: bool = False


StreamRequest = ExecRequest | LogsRequest

REQUEST_TYPES: dict[str, type[ExecRequest] | type[LogsRequest]] = {
    cls.METHOD: cls for cls in (ExecRequest, LogsRequest)
}


def to_request(request: StreamRequest, request_id: str = "1") -> Request:
    """The wire message for ``request``."""
    params = unstructure(request)
    params["start"] = {k: v for k, v in params["start"].items() if k not in _ENVELOPE}
    return Request(request_id=request_id, method=request.METHOD, params=params)


def from_request(request: Request) -> StreamRequest:
    """The typed request ``request`` carries; :class:`ProtocolError` naming the fields when its
    method is not one of these or its params are not valid. Params this side does not know are
    ignored (a newer client may send more)."""
    cls = REQUEST_TYPES.get(request.method)
    if cls is None:
        raise ProtocolError(f"unknown request method {request.method!r}")
    known = fields_dict(cls)
    params = {k: v for k, v in request.params.items() if k in known}
    template = params.get("start")
    if isinstance(template, dict):
        params["start"] = {
            **{k: v for k, v in template.items() if k not in _ENVELOPE},
            "stream_id": 0,
        }
    return structure(params, cls, request.method)
