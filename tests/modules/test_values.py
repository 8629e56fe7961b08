"""Release values at their edges: secrets never quoted (whatever rule fails, at whatever depth)
and refused where labd would not seal them, defaults, ``--set`` parsing, merging, and the
split of secret fields from the public values and back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.errors import Invalid
from lab.modules import parse_spec
from lab.modules.values import (
    REDACTED,
    check_values,
    fill_defaults,
    join_secrets,
    merge,
    parse_set,
    redact,
    secret_paths,
    split_secrets,
    values_from,
)

SECRET = "hunter2-very-secret"
PASSWORD: dict[str, Any] = {"type": "string", "secret": True}
DB: dict[str, Any] = {
    "type": "object",
    "properties": {
        "password": PASSWORD,
        "user": {"type": "string"},
    },
}


def refused(schema: dict[str, Any], values: dict[str, Any]) -> Invalid:
    with pytest.raises(Invalid) as caught:
        check_values(schema, values)
    return caught.value


@pytest.mark.parametrize(
    ("rule", "extra"),
    [
        ("maxProperties", {"maxProperties": 1}),
        ("not", {"not": {"required": ["user"]}}),
        ("anyOf", {"anyOf": [{"required": ["other"]}, {"maxProperties": 1}]}),
        ("oneOf", {"oneOf": [{"required": ["other"]}, {"maxProperties": 1}]}),
        ("const", {"const": {"password": "x"}}),
        ("enum", {"enum": [{"password": "x"}]}),
    ],
)
def test_an_error_about_a_mapping_holding_a_secret_never_quotes_it(
    rule: str, extra: dict[str, Any]
) -> None:
    schema = {"type": "object", "properties": {"db": DB | extra}}
    error = refused(schema, {"db": {"password": SECRET, "user": "u"}})
    assert error.details["errors"][0]["rule"] == rule
    assert error.details["fields"] == ["values.db"]
    assert SECRET not in json.dumps([str(error), error.details])
    assert error.details["errors"][0]["message"].startswith(
        f"the (secret) value does not satisfy {rule} "
    )
    # the same rule on the whole values, at the root
    root = {"type": "object", "properties": {"password": PASSWORD}} | extra
    error = refused(root, {"password": SECRET, "user": "u"})
    assert SECRET not in json.dumps([str(error), error.details])


def test_errors_beside_a_secret_keep_their_message() -> None:
    schema = {
        "type": "object",
        "properties": {"db": DB, "replicas": {"type": "integer", "maximum": 5}},
        "required": ["name"],
        "additionalProperties": False,
    }
    error = refused(schema, {"db": {"password": SECRET}, "replicas": 9, "extra": 1})
    messages = {e["rule"]: e["message"] for e in error.details["errors"]}
    assert messages["maximum"] == "9 is greater than the maximum of 5"
    assert messages["required"] == "'name' is a required property"
    assert "'extra' was unexpected" in messages["additionalProperties"]
    assert sorted(error.details["fields"]) == ["values", "values.name", "values.replicas"]
    first = error.details["errors"][0]
    assert str(error) == f"{first['field']}: {first['message']} (rule {first['rule']}) (and 2 more)"
    inside = refused(
        {"type": "object", "properties": {"db": DB | {"additionalProperties": False}}},
        {"db": {"password": SECRET, "hunter": 1}},
    )
    assert inside.details["errors"][0]["message"].startswith("Additional properties")
    # a rule on a secret field itself: never its value, even as "required" inside a secret
    sealed = {"type": "object", "properties": {"key": {"secret": True, "required": ["a"]}}}
    error = refused(sealed, {"key": {"b": SECRET}})
    assert error.details["errors"][0]["message"] == (
        "the (secret) value does not satisfy required ['a']"
    )
    assert error.details["fields"] == ["values.key.a"]


def test_one_error_says_so_without_more() -> None:
    error = refused({"type": "object", "properties": {"n": {"type": "integer"}}}, {"n": "x"})
    assert str(error) == "values.n: 'x' is not of type 'integer' (rule type)"
    assert error.details["errors"] == [
        {"field": "values.n", "rule": "type", "message": "'x' is not of type 'integer'"}
    ]


def test_values_must_be_a_mapping() -> None:
    with pytest.raises(Invalid, match="values must be a mapping") as caught:
        check_values({"type": "object"}, ["a"])  # type: ignore[arg-type]
    assert caught.value.details["fields"] == ["values"]


def test_formats_are_checked() -> None:
    schema = {"type": "object", "properties": {"ip": {"type": "string", "format": "ipv4"}}}
    assert refused(schema, {"ip": "300.1.1.1"}).details["errors"][0]["rule"] == "format"
    assert check_values(schema, {"ip": "10.0.0.1"}) == {"ip": "10.0.0.1"}


@pytest.mark.parametrize(
    "where",
    [
        {"items": {"type": "object", "properties": {"p": {"secret": True}}}},
        {"additionalProperties": {"secret": True}},
        {"anyOf": [{"type": "object"}, {"secret": True}]},
        {"$defs": {"pw": {"secret": True}}},
    ],
)
def test_a_secret_labd_would_not_seal_is_refused_at_load(where: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {"list": where}}
    text = json.dumps({"name": "m", "version": "1.0.0", "parameters": schema})
    with pytest.raises(Invalid, match="labd seals only fields reached through properties") as c:
        parse_spec(text)
    (field,) = c.value.details["fields"]
    assert field.startswith("parameters.properties.list.") and field.endswith(".secret")


def test_secrets_through_properties_and_data_keywords_load() -> None:
    schema = {
        "type": "object",
        "properties": {
            "db": DB,
            "secret": {"type": "string"},  # a property named secret is no keyword
            "opts": {"type": "object", "default": {"secret": True}, "enum": [{"secret": True}]},
            "flag": {"secret": False, "items": {"secret": False}},
        },
    }
    text = json.dumps({"name": "m", "version": "1.0.0", "parameters": schema})
    assert parse_spec(text).parameters == schema
    assert secret_paths(schema) == [("db", "password")]


def test_secret_paths_at_every_depth() -> None:
    schema = {
        "secret": True,
        "properties": {
            "a": {"properties": {"b": {"properties": {"c": {"secret": True}}}}},
            "d": {"secret": "yes"},
            "e": True,
        },
    }
    assert secret_paths(schema) == [(), ("a", "b", "c")]
    assert secret_paths({"properties": None}) == []


def test_defaults_fill_what_is_missing_at_every_depth() -> None:
    schema = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "default": 3},
            "tls": {
                "type": "object",
                "properties": {"port": {"default": 443}, "on": {"default": True}},
            },
            "empty": {"type": "object", "properties": {"x": {"type": "string"}}},
            "given": {"type": "object", "properties": {"k": {"default": "v"}}},
            "list": {"default": [1]},
            "odd": "not a schema",
        },
    }
    filled = fill_defaults(schema, {"given": {}, "replicas": 0})
    assert filled == {
        "replicas": 0,
        "tls": {"port": 443, "on": True},
        "given": {"k": "v"},
        "list": [1],
    }
    again = fill_defaults(schema, {})
    again["list"].append(2)
    assert fill_defaults(schema, {})["list"] == [1]  # each fill gets its own copy
    assert fill_defaults(schema, "text") == "text"
    assert fill_defaults({"properties": {"a": {"default": 1}}}, {"a": None}) == {"a": None}


def test_redact_split_and_join() -> None:
    schema = {"type": "object", "properties": {"db": DB, "top": {"secret": True}}}
    values: dict[str, Any] = {"db": {"password": SECRET, "user": "u"}, "top": {"nested": 1}}
    public, sealed = split_secrets(schema, values)
    assert public == {"db": {"password": REDACTED, "user": "u"}, "top": REDACTED}
    assert sealed == {"db.password": SECRET, "top": {"nested": 1}}
    assert join_secrets(public, sealed) == values
    assert values["db"]["password"] == SECRET  # the input is left alone
    # absent secrets are neither invented nor redacted; a non-mapping parent is passed over
    assert split_secrets(schema, {"db": {"user": "u"}}) == ({"db": {"user": "u"}}, {})
    assert split_secrets(schema, {"db": "flat"}) == ({"db": "flat"}, {})
    assert redact(schema, {"db": None}) == {"db": None}
    # a secret whose value is None is still a value
    assert split_secrets(schema, {"top": None}) == ({"top": REDACTED}, {"top": None})
    # join builds the parents a public document lacks
    assert join_secrets({}, {"a.b.c": 1, "d": 2}) == {"a": {"b": {"c": 1}}, "d": 2}


def test_merge_is_deep_for_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": [1]}, "d": 1, "e": {"f": 1}}
    over: dict[str, Any] = {"a": {"c": [2], "g": {"h": 1}}, "d": {"x": 1}, "e": 2}
    merged = merge(base, over)
    assert merged == {"a": {"b": 1, "c": [2], "g": {"h": 1}}, "d": {"x": 1}, "e": 2}
    merged["a"]["g"]["h"] = 9
    assert over["a"]["g"]["h"] == 1  # merged values are copies
    assert base == {"a": {"b": 1, "c": [1]}, "d": 1, "e": {"f": 1}}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("a=3", {"a": 3}),
        ("a=1.5", {"a": 1.5}),
        ("a=true", {"a": True}),
        ("a=null", {"a": None}),
        ("a=", {"a": ""}),
        ("a=text", {"a": "text"}),
        ("a.b.c=x", {"a": {"b": {"c": "x"}}}),
        ("a=b=c", {"a": "b=c"}),
        ("a=[1, 2]", {"a": "[1, 2]"}),
        ("a={b: 1}", {"a": "{b: 1}"}),
        ("a=: x", {"a": ": x"}),
        ("a=[unclosed", {"a": "[unclosed"}),
        ("a=2026-01-01", {"a": "2026-01-01"}),
        ("a= 3", {"a": 3}),
    ],
)
def test_set_values(item: str, expected: dict[str, Any]) -> None:
    assert parse_set(item) == expected


@pytest.mark.parametrize("item", ["a", "=1", ".a=1", "a.=1", "a..b=1", ""])
def test_set_refusals(item: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_set(item)
    assert str(caught.value) == f"--set {item!r}: expected KEY=VALUE (KEY may be a.b.c)"
    assert caught.value.details["fields"] == ["set"]


def test_values_files_in_order_then_sets() -> None:
    assert values_from(["a: 1\nb: {c: 1}\n", "", "b: {d: 2}\n"], ["a=5", "b.c=3"]) == {
        "a": 5,
        "b": {"c": 3, "d": 2},
    }
    for files, message in [
        (["a: 1\n", "- x\n"], "-f #2: values must be a mapping"),
        (["a: [\n"], "-f #1: not YAML"),
    ]:
        with pytest.raises(Invalid, match=message) as caught:
            values_from(files, [])
        assert caught.value.details["fields"] == ["values"]


def test_each_missing_property_is_named_once() -> None:
    schema = {
        "type": "object",
        "required": ["a", "b"],
        "properties": {"c": {"type": "object", "required": ["x", "y"]}},
        "allOf": [{"required": ["b", "z"]}],
    }
    error = refused(schema, {"c": {}, "b": 1})
    assert error.details["fields"] == ["values.a", "values.z", "values.c.x", "values.c.y"]
    assert [e["message"] for e in error.details["errors"]][:2] == [
        "'a' is a required property",
        "'z' is a required property",
    ]
    assert str(error) == "values.a: 'a' is a required property (rule required) (and 3 more)"


def test_two_errors_say_one_more() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    error = refused(schema, {"a": "x", "b": "y"})
    assert str(error) == "values.a: 'x' is not of type 'integer' (rule type) (and 1 more)"
    with pytest.raises(Invalid) as caught:
        check_values(schema, "text")  # type: ignore[arg-type]
    assert str(caught.value) == "values must be a mapping"


def test_defaults_and_merges_never_share_nested_values() -> None:
    schema = {
        "type": "object",
        "properties": {
            "odd": "not a schema",
            "opts": {"default": {"list": [1]}},
            "tls": {
                "type": "object",
                "properties": {"port": {"default": 443}, "on": {"default": 1}},
            },
        },
    }
    first = fill_defaults(schema, {"tls": {"port": 8443}})
    assert first == {"opts": {"list": [1]}, "tls": {"port": 8443, "on": 1}}
    first["opts"]["list"].append(2)
    assert fill_defaults(schema, {})["opts"] == {"list": [1]}
    over: dict[str, Any] = {"x": {"y": {"z": [1]}}}
    merged = merge({}, over)
    merged["x"]["y"]["z"].append(2)
    assert over == {"x": {"y": {"z": [1]}}}
    public = {"db": {"password": REDACTED, "user": "u"}}
    joined = join_secrets(public, {"db.password": SECRET})
    assert joined["db"]["password"] == SECRET and public["db"]["password"] == REDACTED


def test_redact_passes_over_a_value_where_a_mapping_was_expected() -> None:
    schema = {"properties": {"a": {"properties": {"b": {"properties": {"c": {"secret": True}}}}}}}
    assert redact(schema, {"a": "flat"}) == {"a": "flat"}
    assert redact(schema, {"a": {"b": "flat"}}) == {"a": {"b": "flat"}}
    assert redact(schema, {"a": {"b": {"c": 1}}}) == {"a": {"b": {"c": REDACTED}}}
