"""The checks of labctl's settings, and a reader of the two settings ``labctl exec`` needs
(labd's URL and where the identity is) that imports neither yaml nor attrs.

:func:`lab.client.settings.load_settings` is the one definition of labctl's settings (YAML file,
``LABCTL_*`` variables, the current context). :func:`quick_target` gives the same answer
when every file involved is a plain ``key: value`` list of what ``labctl config set`` and
``labctl login`` write, and every value passes :data:`CHECKS`; for anything else (a quoted
value, a list, an unknown key, a value that does not check, an identity still to move into a
context) it returns None and the caller asks the full loader, which says what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lab.client.durations import parse_duration
from lab.client.home import (
    CONTEXT_FILE,
    CONTEXT_KEYS,
    check_context_name,
    config_path,
    contexts_root,
    home,
    is_context_name,
)
from lab.errors import Invalid

OUTPUTS = ("table", "wide", "json", "yaml", "name")
"""What the ``output`` setting may be (``-o`` also takes ``jsonpath=EXPR``)."""

# CliSettings' defaults (tests/cli/test_exec_fast.py keeps them equal).
DEFAULTS: dict[str, Any] = {
    "server": "https://127.0.0.1:3100",
    "output": "table",
    "timeout": 30.0,
    "bastion": "http://127.0.0.1:8080",
    "ca_fingerprint": "",
    "context": "",
}


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(
            f"{name} {value!r} is not a URL",
            details={"fields": [name], "hint": f"like https://lab.example:3100 ({name})"},
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise Invalid(f"{name} {value!r} has a bad port", details={"fields": [name]}) from exc
    return value.rstrip("/")


def _output(name: str, value: str) -> str:
    if value not in OUTPUTS:
        raise Invalid(
            f"{name} {value!r} is not an output format",
            details={"fields": [name], "hint": "use one of: " + ", ".join(OUTPUTS)},
        )
    return value


def _timeout(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        return float(parse_duration(value, field=name))
    if not seconds > 0 or seconds == float("inf"):
        raise Invalid(f"{name} {value!r} must be longer than zero", details={"fields": [name]})
    return seconds


def _context(name: str, value: str) -> str:
    return check_context_name(value) if value else value


def _fingerprint(name: str, value: str) -> str:
    if value and not re.fullmatch(r"SHA256:[0-9a-f]{64}", value):
        raise Invalid(
            f"{name} {value!r} is not a CA fingerprint",
            details={"fields": [name], "hint": "SHA256: and 64 hex digits (labctl ca show)"},
        )
    return value


CHECKS: dict[str, Callable[[str, str], Any]] = {
    "server": _url,
    "bastion": _url,
    "output": _output,
    "timeout": _timeout,
    "ca_fingerprint": _fingerprint,
    "context": _context,
}


def check_value(name: str, value: str) -> Any:
    """``value`` (as typed) checked for setting ``name`` and converted; Invalid naming both."""
    return CHECKS[name](name, value.strip())


# A line as `yaml.safe_dump` writes a flat mapping of plain strings and numbers. A string value
# starts with a letter, so YAML reads no number, date or sexagesimal into it; the few words
# YAML 1.1 reads as booleans or null are left to the full loader.
_LINE = re.compile(r"([a-z_]+): ?(.*)")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._:/@+-]*")
_NUMBER = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def plain_mapping(path: Path) -> dict[str, str | float] | None:
    """``path`` read as a flat YAML mapping of plain values (``{}`` when absent); None when
    it holds anything else (the full YAML loader reads it then)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError):
        return None
    out: dict[str, str | float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None or match[1] in out:
            return None
        value = match[2]
        if _NUMBER.fullmatch(value):
            out[match[1]] = float(value)
        elif _PLAIN.fullmatch(value) and value.lower() not in _WORDS:
            out[match[1]] = value
        else:
            return None
    return out


def quick_target(environ: Mapping[str, str] | None = None) -> tuple[str, Path] | None:
    """``(server, identity directory)`` as :func:`lab.client.settings.load_settings` and
    :func:`lab.client.contexts.identity_dir` find them, or None when only they can tell."""
    env = os.environ if environ is None else environ
    held = plain_mapping(config_path(env))
    if held is None or any(key not in DEFAULTS for key in held):
        return None
    if isinstance(held.get("server", ""), float) or isinstance(held.get("context", ""), float):
        return None
    values: dict[str, Any] = {**DEFAULTS, **held}
    for name in DEFAULTS:
        if env.get(f"LABCTL_{name.upper()}"):
            values[name] = env[f"LABCTL_{name.upper()}"]
    context = str(values["context"])
    directory = home()
    if context:
        if not is_context_name(context) or (home() / "cert.pem").is_file():
            return None  # a bad name, or an identity the full path moves into a context
        directory = contexts_root() / context
        own = plain_mapping(directory / CONTEXT_FILE)
        if own is None or not directory.is_dir():
            return None
        for key in CONTEXT_KEYS:
            if key in own and not env.get(f"LABCTL_{key.upper()}"):
                if isinstance(own[key], float):
                    return None
                values[key] = own[key]
    for name, check in CHECKS.items():
        try:
            check(name, str(values[name]).strip())
        except Invalid:
            return None
    return str(values["server"]), directory


__all__ = ["CHECKS", "DEFAULTS", "OUTPUTS", "check_value", "plain_mapping", "quick_target"]
