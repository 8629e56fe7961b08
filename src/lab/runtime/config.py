"""Configuration: attrs classes with defaults, a YAML file, environment overrides.

Precedence, lowest to highest: field default < YAML file < environment variable. Every field
of a config class is a setting users may write; unknown keys in the file are an error that
names the valid keys, and a malformed file is an error naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import yaml

from lab.errors import ConfigError

C = TypeVar("C")


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file holding one mapping; an absent or empty file is ``{}``.

    Raises ConfigError naming the file (and the line, for a syntax error).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: malformed YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def field_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)]


def check_key(cls: type, key: str) -> str:
    """Return ``key`` (with ``-`` as ``_``) if ``cls`` has it, else raise naming valid keys."""
    name = key.replace("-", "_")
    valid = field_names(cls)
    if name not in valid:
        raise ConfigError(
            f"unknown config key {key!r}",
            details={"valid_keys": valid, "hint": "valid keys: " + ", ".join(valid)},
        )
    return name


def coerce(cls: type, name: str, value: Any, *, source: str) -> Any:
    """Convert a YAML or environment value to the declared type of field ``name``."""
    field = attrs.fields_dict(cls)[name]
    typ = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    typ = str(typ).replace(" ", "")
    try:
        if typ.startswith("int"):
            if isinstance(value, bool):
                raise ValueError("not an integer")
            return int(value)
        if typ.startswith("float"):
            return float(value)
        if typ.startswith("bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("not a boolean (use true or false)")
        if typ.startswith(("list", "tuple")):
            if isinstance(value, list | tuple):
                return tuple(str(v) for v in value)
            return tuple(p.strip() for p in str(value).split(",") if p.strip())
        if typ.startswith("str"):
            if value is None and "None" in typ:
                return None
            if isinstance(value, dict | list):
                raise ValueError("expected a single value")
            return str(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid value for {name!r}: {exc}") from exc
    return value


def load_config(
    cls: type[C],
    *,
    file: Path | None,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> C:
    """Build ``cls`` from its defaults, then ``file``, then ``<env_prefix><KEY>`` variables.

    ``aliases`` maps extra environment variable names to field names (lower precedence than
    the prefixed variable), e.g. ``{"DATABASE_URL": "database_url"}``.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if file is not None:
        for key, raw in read_yaml_mapping(file).items():
            name = check_key(cls, key)
            values[name] = coerce(cls, name, raw, source=str(file))
    for var, name in (aliases or {}).items():
        if env.get(var):
            values[name] = coerce(cls, name, env[var], source=var)
    for name in field_names(cls):
        var = env_prefix + name.upper()
        if var in env and env[var] != "":
            values[name] = coerce(cls, name, env[var], source=var)
    return cls(**values)


def default_data_dir(system: str, user_suffix: str) -> Path:
    """``/var/lib/<system>`` for root, else ``~/.local/share/<user_suffix>``."""
    if os.geteuid() == 0:
        return Path("/var/lib") / system
    return Path.home() / ".local" / "share" / user_suffix
