"""labctl's own settings: ``~/.labctl/config.yaml`` (or ``LABCTL_CONFIG``) + ``LABCTL_*`` env."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml
from attrs import frozen

from lab.runtime.config import check_key, coerce, field_names, load_config, read_yaml_mapping


@frozen(kw_only=True)
class CliSettings:
    # labd's URL, e.g. https://lab.example:3100 (LABCTL_SERVER).
    server: str = "https://127.0.0.1:3100"
    # Default output format: table, wide, json or yaml (LABCTL_OUTPUT).
    output: str = "table"
    # Seconds to wait for labd on each request (LABCTL_TIMEOUT).
    timeout: float = 30.0
    # The bastion's URL for `labctl provision` (LABCTL_BASTION).
    bastion: str = "http://127.0.0.1:8080"
    # SHA-256 fingerprint of the CA trusted for `server` (LABCTL_CA_FINGERPRINT; set by login).
    ca_fingerprint: str = ""


def home() -> Path:
    return Path(os.environ.get("LABCTL_HOME") or Path.home() / ".labctl").expanduser()


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return (
        Path(env["LABCTL_CONFIG"]).expanduser()
        if env.get("LABCTL_CONFIG")
        else home() / "config.yaml"
    )


def load_settings(environ: Mapping[str, str] | None = None) -> CliSettings:
    return load_config(
        CliSettings, file=config_path(environ), env_prefix="LABCTL_", environ=environ
    )


def file_settings(path: Path) -> dict[str, Any]:
    """What the file itself holds (validated), without defaults or environment."""
    raw = read_yaml_mapping(path)
    return {check_key(CliSettings, k): v for k, v in raw.items()}


def set_setting(key: str, value: str, path: Path | None = None) -> Any:
    """Validate and write one setting into the config file (0600); returns the stored value."""
    path = path or config_path()
    name = check_key(CliSettings, key)
    typed = coerce(CliSettings, name, value, source="value")
    data = file_settings(path)
    data[name] = typed
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=True)
    os.replace(tmp, path)
    return typed


def settings_sources(environ: Mapping[str, str] | None = None) -> list[tuple[str, Any, str]]:
    """(key, effective value, where it came from) for every setting."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    in_file = file_settings(path)
    effective = attrs.asdict(load_settings(env))
    out = []
    for name in field_names(CliSettings):
        var = "LABCTL_" + name.upper()
        if env.get(var):
            source = var
        elif name in in_file:
            source = str(path)
        else:
            source = "default"
        out.append((name, effective[name], source))
    return out
