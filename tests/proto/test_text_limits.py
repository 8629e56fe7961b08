"""lab.model's JSON limits, plain-text checks and facts bounds, without I/O."""

from __future__ import annotations

import json

import pytest

from lab.errors import Invalid
from lab.model.facts import MAX_FACTS_BYTES, facts_problem
from lab.model.safejson import loads, nesting_exceeds
from lab.model.text import escape_control, plain_text_problem
from lab.proto import decode
from lab.proto.errors import ProtocolError


def test_nesting_is_measured_before_decoding() -> None:
    assert not nesting_exceeds("[" * 32 + "]" * 32, 32)
    assert nesting_exceeds("[" * 33 + "]" * 33, 32)
    assert nesting_exceeds('{"a":' * 40 + "1" + "}" * 40, 32)
    # Brackets inside strings (escaped quotes included) do not count.
    assert not nesting_exceeds(json.dumps(["[" * 100, '\\"[[[[' * 50]), 2)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 300_000 + "]" * 300_000, "too_deep"),
        ("[" * 300_000, "too_deep"),
        ('{"a": "\\ud800"}', "surrogate"),
        ('{"\\udfff": 1}', "surrogate"),
        ("{nope", "not_json"),
        (b"\xff\xfe", "not_json"),
        ("[" + "1," * 600_000 + "1]", "too_large"),
    ],
)
def test_loads_refuses_with_a_reason(text: str | bytes, reason: str) -> None:
    with pytest.raises(Invalid) as info:
        loads(text)
    assert info.value.details["reason"] == reason
    assert info.value.details["fields"]


def test_loads_keeps_valid_pairs_and_names_the_bad_field() -> None:
    assert loads('{"smile": "\\ud83d\\ude00"}') == {"smile": "\U0001f600"}
    with pytest.raises(Invalid) as info:
        loads('{"x": ["ok", "\\udc00"]}')
    assert info.value.details["fields"] == ["body.x[1]"]


def test_plain_text_and_escaping() -> None:
    assert plain_text_problem("web-1.lab") is None
    assert plain_text_problem("a\u202eb") is not None
    assert plain_text_problem("ok\x1b[2J") is not None
    assert plain_text_problem("line\nline", allow="\t\n") is None
    assert escape_control("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"
    assert escape_control(escape_control("a\nb")) == "a\\nb"


def test_facts_bounds() -> None:
    assert facts_problem({"kernel": "6.1", "disks": [{"name": "sda"}]}) is None
    assert "over the limit" in str(facts_problem({"x": "y" * MAX_FACTS_BYTES}))
    deep: dict[str, object] = {}
    cursor = deep
    for _ in range(9):
        cursor["n"] = {}
        cursor = cursor["n"]  # type: ignore[assignment]
    assert "deeper" in str(facts_problem(deep))
    assert "fact name" in str(facts_problem({"a\nb": 1}))
    assert "JSON object" in str(facts_problem([1]))


def test_protocol_messages_are_depth_checked_and_argv_checked() -> None:
    with pytest.raises(ProtocolError, match="deeper"):
        decode('{"type":"ping","v":1,"nonce":' + "[" * 100 + "]" * 100 + "}")
    start = {"type": "exec-start", "v": 1, "stream_id": 1}
    assert decode(json.dumps({**start, "argv": ["sh", "-c", "a\n\tb"]}))
    for bad in ("\ud800", "\x1b[2J", "\x00"):
        with pytest.raises(ProtocolError) as info:
            decode(json.dumps({**start, "argv": ["echo", bad]}))
        assert "argv" in json.dumps(info.value.details)
