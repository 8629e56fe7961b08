"""Where labctl keeps its state: the home (``$LABCTL_HOME``, ``~/.labctl``), its config file,
and the contexts under it (their names and what a context's file holds).

The one module both :mod:`lab.client.settings` (which overlays the current context's values)
and :mod:`lab.client.contexts` (which creates, switches and removes contexts) read, so that
neither imports the other back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.errors import Invalid

CONTEXT_FILE = "context.yaml"
CONTEXT_KEYS = ("server", "ca_fingerprint")
"""The settings a context holds; the others stay global."""

_CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def home() -> Path:
    return Path(os.environ.get("LABCTL_HOME") or Path.home() / ".labctl").expanduser()


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return (
        Path(env["LABCTL_CONFIG"]).expanduser()
        if env.get("LABCTL_CONFIG")
        else home() / "config.yaml"
    )


def contexts_root() -> Path:
    return home() / "contexts"


def is_context_name(name: str) -> bool:
    return _CONTEXT_NAME.fullmatch(name) is not None


def check_context_name(name: str) -> str:
    if not is_context_name(name):
        raise Invalid(
            f"context name {name!r} is not valid",
            details={"hint": "up to 63 letters, digits, '.', '_' or '-'"},
        )
    return name


def read_context(name: str) -> dict[str, Any]:
    """The settings ``context.yaml`` of context ``name`` holds (``{}`` if none)."""
    # Here, not at the top: the fast `labctl exec` reads this module and never YAML
    # (lab.client.quicksettings); yaml and attrs cost it more than its TLS handshake.
    from lab.runtime.config import read_yaml_mapping

    data = read_yaml_mapping(contexts_root() / check_context_name(name) / CONTEXT_FILE)
    return {k: v for k, v in data.items() if k in CONTEXT_KEYS}
