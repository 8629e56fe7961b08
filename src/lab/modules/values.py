"""A release's values: ``--set``/``-f`` merged, defaults filled in, checked against the module's
``parameters`` (JSON Schema draft 2020-12), and the secret fields found and redacted.

A field is secret when its schema says ``secret: true``; its value is sealed in labd's secrets
store and never appears in an error message, a log line or an API answer (:func:`redact`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jsonschema
import yaml

from lab.errors import Invalid

REDACTED = "<sealed>"
"""What a secret value shows as outside the secrets store."""

Path = tuple[str, ...]


def secret_paths(schema: Mapping[str, Any], prefix: Path = ()) -> list[Path]:
    """The value paths whose schema says ``secret: true`` (through nested ``properties``)."""
    found: list[Path] = []
    if schema.get("secret") is True:
        found.append(prefix)
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            found += secret_paths(sub, (*prefix, str(name)))
    return found


# Rules whose messages name properties, never quote a value.
_NAMES_ONLY = frozenset({"required", "additionalProperties"})


def _under(path: Sequence[Any], secrets: Iterable[Path], rule: str) -> bool:
    """Whether an error at ``path`` must not quote its value: the value is a secret or inside
    one, or it holds one (``maxProperties``, ``not``, ``anyOf``... quote the whole mapping)
    and ``rule`` is not one whose message names properties only."""
    strings = tuple(str(p) for p in path)
    return any(
        strings[: len(s)] == s or (s[: len(strings)] == strings and rule not in _NAMES_ONLY)
        for s in secrets
    )


def fill_defaults(schema: Mapping[str, Any], values: Any) -> Any:
    """``values`` with every missing property that has a ``default`` set (recursively)."""
    if not isinstance(values, dict):
        return values
    out = dict(values)
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name not in out and sub.get("type") == "object" and sub.get("properties"):
            # An object left out whose fields have defaults gets them, as Helm's values do.
            filled = fill_defaults(sub, {})
            if filled:
                out[name] = filled
        if name in out:
            out[name] = fill_defaults(sub, out[name])
    return out


def _message(error: jsonschema.ValidationError, secret: bool) -> str:
    if not secret:
        return str(error.message)
    # jsonschema's messages quote the value; a secret's must not leave labd.
    return f"the (secret) value does not satisfy {error.validator} {error.validator_value!r}"


def check_values(schema: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values with defaults filled in, or Invalid naming each wrong field and its rule.

    ``details["errors"]`` is a list of ``{"field", "rule", "message"}``; ``details["fields"]``
    the field paths (``values.replicas``). A secret field's message never quotes its value.
    """
    if not isinstance(values, Mapping):
        raise Invalid("values must be a mapping", details={"fields": ["values"]})
    filled: dict[str, Any] = fill_defaults(schema, dict(values))
    secrets = secret_paths(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors: list[dict[str, str]] = []
    # "required" fails once per missing property, in the order it lists them: the n-th failure
    # of one "required" at one path names its n-th missing property.
    nth: dict[tuple[Any, ...], int] = {}
    for error in sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path)):
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [r for r in error.validator_value if r not in error.instance]
            seen = (*path, tuple(error.validator_value))
            index = nth[seen] = nth.get(seen, -1) + 1
            path += missing[index : index + 1]
        field = ".".join(["values", *path])
        errors.append(
            {
                "field": field,
                "rule": str(error.validator),
                "message": _message(error, _under(path, secrets, str(error.validator))),
            }
        )
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise Invalid(
            f"{first['field']}: {first['message']} (rule {first['rule']}){more}",
            details={"fields": [e["field"] for e in errors], "errors": errors},
        )
    return filled


def redact(schema: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with every secret field replaced by :data:`REDACTED`."""
    out = copy.deepcopy(dict(values))
    for path in secret_paths(schema):
        node: Any = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path and path[-1] in node:
            node[path[-1]] = REDACTED
    return out


def split_secrets(
    schema: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(public, secret)``: the values redacted, and the secret fields alone (by dotted path)."""
    secret: dict[str, Any] = {}
    for path in secret_paths(schema):
        node: Any = values
        for key in path:
            node = node.get(key, _MISSING) if isinstance(node, Mapping) else _MISSING
        if node is not _MISSING:
            secret[".".join(path)] = node
    return redact(schema, values), secret


def join_secrets(public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_secrets`."""
    out = copy.deepcopy(dict(public))
    for dotted, value in secret.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


_MISSING = object()


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(item: str) -> dict[str, Any]:
    """``a.b=VALUE`` as ``{"a": {"b": VALUE}}``; VALUE is a YAML scalar (``3``, ``true``,
    ``null``, ``text``), anything else stays a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise Invalid(
            f"--set {item!r}: expected KEY=VALUE (KEY may be a.b.c)", details={"fields": ["set"]}
        )
    try:
        value: Any = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) or not isinstance(
        value, (str, int, float, bool, type(None))
    ):
        value = raw
    out: dict[str, Any] = {}
    node = out
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def values_from(files: Iterable[str], sets: Iterable[str]) -> dict[str, Any]:
    """Values from ``-f`` texts (in order) then ``--set`` items, each overriding the last."""
    values: dict[str, Any] = {}
    for index, text in enumerate(files):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise Invalid(
                f"-f #{index + 1}: not YAML: {exc}", details={"fields": ["values"]}
            ) from exc
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise Invalid(
                f"-f #{index + 1}: values must be a mapping", details={"fields": ["values"]}
            )
        values = merge(values, doc)
    for item in sets:
        values = merge(values, parse_set(item))
    return values
