"""The exec/logs request: typed on both ends, one converter, the wire format labctl always sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.proto import ProtocolError, decode, encode
from lab.proto.messages import ExecStart, LogsStart, Request
from lab.proto.requests import ExecRequest, LogsRequest, from_request, to_request


def _raw(method: str, params: dict[str, Any]) -> Request:
    return Request(request_id="1", method=method, params=params)


def _fields(method: str, params: dict[str, Any]) -> list[str]:
    with pytest.raises(ProtocolError) as info:
        from_request(_raw(method, params))
    fields: list[str] = info.value.details["fields"]
    return fields


def test_an_exec_request_survives_the_wire() -> None:
    start = ExecStart(stream_id=0, argv=["uname", "-a"], env={"A": "1"}, tty=True, timeout=5.0)
    request = ExecRequest(targets=["web1", "web2"], labels={"rack": "a"}, parallel=4, start=start)
    wire = decode(encode(to_request(request)))
    assert isinstance(wire, Request) and wire.method == "exec"
    # labd numbers the streams: the template carries no stream id (nor type and version).
    assert "stream_id" not in wire.params["start"] and "type" not in wire.params["start"]
    assert from_request(wire) == request


def test_a_logs_request_survives_the_wire() -> None:
    request = LogsRequest(targets=["db"], start=LogsStart(stream_id=0, unit="nginx", follow=True))
    assert from_request(decode(encode(to_request(request)))) == request


def test_an_older_clients_request_is_understood() -> None:
    # What labctl has always sent: a partial template, no labels, extra keys labd ignores.
    params = {
        "targets": ["web1"],
        "parallel": 32,
        "keepalive": True,
        "future": 1,
        "start": {"argv": ["true"], "type": "exec-start", "v": 1, "stream_id": 9},
    }
    typed = from_request(_raw("exec", params))
    assert typed == ExecRequest(
        targets=["web1"], keepalive=True, start=ExecStart(stream_id=0, argv=["true"])
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"targets": "web1", "start": {"argv": ["x"]}}, "targets"),
        ({"targets": [""], "start": {"argv": ["x"]}}, "targets"),
        ({"targets": ["we\x1bb"], "start": {"argv": ["x"]}}, "targets"),
        ({"labels": {"a": 1}, "start": {"argv": ["x"]}}, "labels"),
        ({"targets": ["a"], "parallel": 0, "start": {"argv": ["x"]}}, "parallel"),
        ({"targets": ["a"], "parallel": True, "start": {"argv": ["x"]}}, "parallel"),
        ({"targets": ["a"], "keepalive": "yes", "start": {"argv": ["x"]}}, "keepalive"),
        ({"targets": ["a"]}, "start"),
        ({"targets": ["a"], "start": "uname"}, "start"),
        ({"targets": ["a"], "start": {"argv": ["echo", "\ud800"]}}, "start.argv"),
        ({"targets": ["a"], "start": {"argv": []}}, "start.argv"),
        ({"targets": ["a"], "start": {"argv": ["x"], "bogus": 1}}, "start"),
    ],
)
def test_a_bad_exec_request_names_its_field(params: dict[str, Any], field: str) -> None:
    fields = _fields("exec", params)
    # A type error's path ends at the field; a validator names it at its object's path.
    parent, _, name = f"exec.{field}".rpartition(".")
    assert any(f"exec.{field}" in f or (name in f and f.endswith(f"@ {parent}")) for f in fields)


def test_a_logs_request_takes_a_logs_start() -> None:
    fields = _fields("logs", {"targets": ["a"], "start": {"argv": ["x"]}})
    assert any("logs.start" in f for f in fields), fields


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown request method"):
        from_request(_raw("shell", {"start": {}}))


def test_the_wire_is_json_labd_already_spoke() -> None:
    request = ExecRequest(targets=["a"], start=ExecStart(stream_id=0, argv=["id"]))
    body = json.loads(encode(to_request(request)))
    assert body["type"] == "request" and body["method"] == "exec"
    assert body["params"]["targets"] == ["a"] and body["params"]["start"]["argv"] == ["id"]
