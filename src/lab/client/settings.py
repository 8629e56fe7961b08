"""labctl's own settings: ``~/.labctl/config.yaml`` (or ``LABCTL_CONFIG``) + ``LABCTL_*`` env."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml
from attrs import frozen

from lab.client.credentials import write_atomic
from lab.client.home import (
    CONTEXT_FILE,
    CONTEXT_KEYS,
    config_path,
    contexts_root,
    read_context,
)
from lab.client.quicksettings import CHECKS, OUTPUTS, check_value
from lab.errors import ConfigError, Invalid
from lab.runtime.config import check_key, coerce, field_names, load_config, read_yaml_mapping


@frozen(kw_only=True)
class CliSettings:
    # The defaults are lab.client.quicksettings.DEFAULTS too (a test keeps them equal).
    # labd's URL, e.g. https://lab.example:3100 (LABCTL_SERVER).
    server: str = "https://127.0.0.1:3100"
    # Default output format: table, wide, json, yaml or name (LABCTL_OUTPUT).
    output: str = "table"
    # How long to wait for labd on each request: seconds or a duration like 30s, 2m
    # (LABCTL_TIMEOUT).
    timeout: float = 30.0
    # The bastion's URL for `labctl provision` (LABCTL_BASTION).
    bastion: str = "http://127.0.0.1:8080"
    # SHA-256 fingerprint of the CA trusted for `server` (LABCTL_CA_FINGERPRINT; set by login).
    ca_fingerprint: str = ""
    # The current context: a labd and an identity under contexts/NAME/ (LABCTL_CONTEXT,
    # --context NAME; set by login and config use-context).
    context: str = ""


def load_settings(environ: Mapping[str, str] | None = None) -> CliSettings:
    """The effective settings; a bad value in the file or environment is a ConfigError."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    # Durations are allowed where seconds are: the loader itself only knows numbers.
    raw_timeout = env.get("LABCTL_TIMEOUT", "")
    if raw_timeout and not raw_timeout.replace(".", "", 1).isdigit():
        env = {**env, "LABCTL_TIMEOUT": str(_checked("timeout", raw_timeout, "LABCTL_TIMEOUT"))}
    settings = load_config(CliSettings, file=path, env_prefix="LABCTL_", environ=env)
    sources = {name: str(path) for name in CHECKS}
    # The context's own server and fingerprint win over the file; the environment wins over
    # both.
    context = env.get("LABCTL_CONTEXT") or settings.context
    if context:
        held: dict[str, Any] = {
            k: str(v)
            for k, v in read_context(context).items()
            if not env.get(f"LABCTL_{k.upper()}")
        }
        settings = attrs.evolve(settings, **held)
        sources.update({k: str(contexts_root() / context / CONTEXT_FILE) for k in held})
    for name in CHECKS:
        value = getattr(settings, name)
        var = f"LABCTL_{name.upper()}"
        _checked(name, str(value), var if env.get(var) else sources[name])
    return settings


__all__ = [
    "OUTPUTS",
    "CliSettings",
    "check_value",
    "file_settings",
    "load_settings",
    "set_setting",
    "settings_sources",
    "unset_setting",
]


def _checked(name: str, value: str, source: str) -> Any:
    try:
        return check_value(name, value)
    except Invalid as exc:
        raise ConfigError(f"{source}: {exc.message}", details=exc.details) from None


def file_settings(path: Path) -> dict[str, Any]:
    """What the file itself holds (validated), without defaults or environment."""
    raw = read_yaml_mapping(path)
    return {check_key(CliSettings, k): v for k, v in raw.items()}


def set_setting(key: str, value: str, path: Path | None = None) -> Any:
    """Validate and write one setting into the config file (0600); returns the stored value."""
    path = path or config_path()
    name = check_key(CliSettings, key)
    typed = coerce(CliSettings, name, check_value(name, value), source="value")
    data = file_settings(path)
    data[name] = typed
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _save(path, data)
    return typed


def unset_setting(key: str, path: Path | None = None) -> None:
    """Remove one setting from the config file (it falls back to its default)."""
    path = path or config_path()
    name = check_key(CliSettings, key)
    data = file_settings(path)
    if data.pop(name, None) is None:
        return
    _save(path, data)


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write the config file atomically, 0600."""
    write_atomic(path, yaml.safe_dump(data, sort_keys=True).encode(), mode=0o600)


def settings_sources(environ: Mapping[str, str] | None = None) -> list[tuple[str, Any, str]]:
    """(key, effective value, where it came from) for every setting."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    in_file = file_settings(path)
    effective = attrs.asdict(load_settings(env))
    out = []
    for name in field_names(CliSettings):
        var = "LABCTL_" + name.upper()
        context = env.get("LABCTL_CONTEXT") or effective["context"]
        if env.get(var):
            source = var
        elif context and name in CONTEXT_KEYS and name in read_context(context):
            source = f"context {context}"
        elif name in in_file:
            source = str(path)
        else:
            source = "default"
        out.append((name, effective[name], source))
    return out
