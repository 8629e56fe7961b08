"""Labels and label selectors, as in Kubernetes: the one grammar of every ``-l``.

A selector is requirements separated by commas, all of which must hold::

    role=db            role==db          equality
    zone!=a                              inequality (also true when zone is not set)
    tier in (web,api)  tier notin (x)    set membership (notin: also when tier is not set)
    gpu                !gpu              the key exists / does not exist

Spaces around words are ignored. Several selectors (repeated ``-l``) are ANDed: parse each and
add them. Keys are ``NAME`` or ``PREFIX/NAME`` (NAME: up to 63 letters, digits, ``-_.``,
starting and ending with a letter or digit; PREFIX: a DNS subdomain); values follow NAME's
rules and may be empty. Bad input raises :class:`lab.errors.Invalid` whose message quotes the
user's selector and says what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

from attrs import frozen

from lab.errors import Invalid

_NAME = re.compile(r"[A-Za-z0-9]([-._A-Za-z0-9]*[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
NAME_MAX = 63
PREFIX_MAX = 253

Op = Literal["=", "!=", "in", "notin", "exists", "!exists"]

HINT = "e.g. -l 'role=db,zone!=a,tier in (web,api),!gpu,ssd'"


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key, or None when it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > PREFIX_MAX or not _PREFIX.fullmatch(prefix)):
        return "its prefix must be a lowercase DNS subdomain of at most 253 characters"
    if not name:
        return "it has no name"
    if len(name) > NAME_MAX:
        return "its name is longer than 63 characters"
    if not _NAME.fullmatch(name):
        return (
            "its name must start and end with a letter or digit and hold only letters, "
            "digits, '-', '_' and '.'"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value (empty is valid), or None."""
    if not value:
        return None
    if len(value) > NAME_MAX:
        return "it is longer than 63 characters"
    if not _NAME.fullmatch(value):
        return (
            "it must start and end with a letter or digit and hold only letters, digits, "
            "'-', '_' and '.'"
        )
    return None


@frozen
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        return value is None or value not in self.values  # != and notin

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return f"{self.key}{self.op}{self.values[0]}"


@frozen
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __add__(self, other: Selector) -> Selector:
        return Selector(self.requirements + other.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def equalities(self) -> dict[str, str]:
        """The ``key=value`` requirements (a store can pre-filter on them)."""
        out: dict[str, str] = {}
        for r in self.requirements:
            if r.op == "=" or (r.op == "in" and len(r.values) == 1):
                if out.get(r.key, r.values[0]) != r.values[0]:
                    return {r.key: "\0"}  # two different values: nothing matches
                out[r.key] = r.values[0]
        return out


def _bad(text: str, why: str) -> Invalid:
    return Invalid(
        f"bad selector {text!r}: {why}",
        details={"fields": ["selector"], "reason": "bad_selector", "hint": HINT},
    )


def _split(text: str) -> list[str]:
    """The requirements of ``text``: split at commas outside parentheses."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise _bad(text, "nested parentheses")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _bad(text, "')' without '('")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise _bad(text, "'(' without ')'")
    parts.append(text[start:])
    return parts


_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_CMP = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>\S*)$")


def _requirement(text: str, part: str) -> Requirement:
    part = part.strip()
    if not part:
        raise _bad(text, "an empty requirement (two commas, or a comma at an end)")
    req: Requirement
    if match := _SET.match(part):
        values = tuple(v.strip() for v in match["values"].split(","))
        if values == ("",):
            raise _bad(text, f"{match['op']} () needs at least one value")
        op: Op = "in" if match["op"] == "in" else "notin"
        req = Requirement(match["key"], op, values)
    elif match := _CMP.match(part):
        req = Requirement(match["key"], "!=" if match["op"] == "!=" else "=", (match["value"],))
    elif part.startswith("!") and " " not in part:
        req = Requirement(part[1:].strip(), "!exists")
    elif re.fullmatch(r"\S+", part) and not any(c in part for c in "=!()"):
        req = Requirement(part, "exists")
    else:
        raise _bad(
            text,
            f"cannot read {part!r} (use KEY=VALUE, KEY!=VALUE, KEY in (A,B), "
            "KEY notin (A,B), KEY or !KEY)",
        )
    problem = label_key_problem(req.key)
    if problem is not None:
        raise _bad(text, f"key {req.key!r} is not valid: {problem}")
    for value in req.values:
        problem = label_value_problem(value)
        if problem is not None:
            raise _bad(text, f"value {value!r} is not valid: {problem}")
    return req


def parse_selector(text: str) -> Selector:
    """One selector string (one ``-l``) as a :class:`Selector`; Invalid when malformed."""
    if not text.strip():
        raise _bad(text, "it is empty")
    return Selector(tuple(_requirement(text, part) for part in _split(text)))


def parse_selectors(texts: Iterable[str]) -> Selector:
    """Several selectors (repeated ``-l``), ANDed."""
    out = Selector()
    for text in texts:
        out = out + parse_selector(text)
    return out
