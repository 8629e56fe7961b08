"""Contexts: one labd and one identity each, like kubectl contexts or tsh profiles.

A context NAME lives in ``$LABCTL_HOME/contexts/NAME/``: the identity (``key.pem``,
``cert.pem``, ``ca.pem``) and ``context.yaml`` with the ``server`` and ``ca_fingerprint`` of
that labd. The current one is the ``context`` setting (``labctl config use-context``), or
``LABCTL_CONTEXT`` / ``--context NAME`` for one command. Without any context labctl keeps
its single identity directly in ``$LABCTL_HOME`` (as before contexts); the first time
contexts are used, that identity becomes a context named after its server.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lab.client.credentials import CA_FILE, CERT_FILE, KEY_FILE, ensure_private_dir, write_atomic
from lab.errors import Invalid, NotFound

ENV = "LABCTL_CONTEXT"
CONTEXT_FILE = "context.yaml"
IDENTITY_FILES = (KEY_FILE, CERT_FILE, CA_FILE)
KEYS = ("server", "ca_fingerprint")
"""The settings a context holds; the others stay global."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def root() -> Path:
    from lab.client.settings import home

    return home() / "contexts"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise Invalid(
            f"context name {name!r} is not valid",
            details={"hint": "up to 63 letters, digits, '.', '_' or '-'"},
        )
    return name


def name_for(server: str) -> str:
    """The context named after a server URL: ``https://lab.example:3100`` → ``lab.example``
    (the port joins the name when it is not labd's default, 3100)."""
    parts = urlsplit(server)
    host = (parts.hostname or "labd").lower()
    name = host if parts.port in (None, 3100) else f"{host}-{parts.port}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:63]


def read(name: str) -> dict[str, Any]:
    """The settings ``context.yaml`` of ``name`` holds (``{}`` if none)."""
    from lab.runtime.config import read_yaml_mapping

    data = read_yaml_mapping(root() / check_name(name) / CONTEXT_FILE)
    return {k: v for k, v in data.items() if k in KEYS}


def write(name: str, **values: str) -> None:
    """Update settings of context ``name`` (created 0700 when new)."""
    directory = ensure_private_dir(root() / check_name(name))
    data = read(name) if (directory / CONTEXT_FILE).exists() else {}
    data.update(values)
    text = yaml.safe_dump(data, sort_keys=True).encode()
    write_atomic(directory / CONTEXT_FILE, text, mode=0o600)


def names() -> list[str]:
    base = root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def selected(environ: dict[str, str] | None = None) -> str | None:
    """The context in use: ``LABCTL_CONTEXT`` (``--context``), else the ``context`` setting."""
    from lab.client.settings import config_path, file_settings

    env = os.environ if environ is None else environ
    name = env.get(ENV) or str(file_settings(config_path(env)).get("context") or "")
    return name or None


def identity_dir() -> Path:
    """Where the identity in use lives: the selected context's directory, else the home.

    Raises :class:`NotFound` for a selected context that does not exist.
    """
    from lab.client.settings import home

    name = selected()
    if name is None:
        return home()
    migrate_legacy()
    directory = root() / check_name(name)
    if not directory.is_dir():
        raise NotFound(
            f"no context named {name!r}",
            details={"hint": "labctl config get-contexts lists them; labctl login creates one"},
        )
    return directory


def legacy_identity() -> bool:
    from lab.client.settings import home

    return (home() / CERT_FILE).is_file()


def migrate_legacy() -> str | None:
    """Move the identity kept directly in the home into a context named after its server.

    Returns the new context's name (None when there was nothing to move). The ``context``
    setting points at it unless another context is already current.
    """
    from lab.client.settings import config_path, file_settings, home, set_setting

    if not legacy_identity():
        return None
    settings = file_settings(config_path())
    server = str(settings.get("server") or os.environ.get("LABCTL_SERVER") or "")
    name = name_for(server) if server else "default"
    directory = ensure_private_dir(root() / name)
    for file in IDENTITY_FILES:
        source = home() / file
        if source.exists():
            os.replace(source, directory / file)
    values = {k: str(settings[k]) for k in KEYS if settings.get(k)}
    if server:
        values["server"] = server
    write(name, **values)
    if not settings.get("context"):
        set_setting("context", name)
    return name


def listing() -> list[dict[str, Any]]:
    """Every context with its server and whether it is current (migrating the old identity)."""
    migrate_legacy()
    current = selected()
    return [
        {"current": "*" if name == current else "", "name": name, **read(name)} for name in names()
    ]


def use(name: str) -> None:
    """Make ``name`` the current context; NotFound when there is no such context."""
    from lab.client.settings import set_setting

    migrate_legacy()
    if check_name(name) not in names():
        raise NotFound(
            f"no context named {name!r}",
            details={"hint": "labctl config get-contexts lists them; labctl login creates one"},
        )
    set_setting("context", name)


def remove(name: str) -> None:
    """Delete context ``name`` (its identity included); unset it when it was current."""
    from lab.client.settings import config_path, file_settings, unset_setting

    directory = root() / check_name(name)
    if directory.is_dir():
        shutil.rmtree(directory)
    if file_settings(config_path()).get("context") == name:
        unset_setting("context")


def login_target(server: str) -> tuple[str | None, Path]:
    """Which context a login to ``server`` fills, and its directory (None: the home).

    ``--context NAME`` (LABCTL_CONTEXT) names it. Otherwise, once contexts are in use (or
    the home holds an identity of another server), the context of that server (an existing
    one with the same URL, else one named after it). With neither, the single identity in
    the home, as before contexts.
    """
    from lab.client.settings import config_path, file_settings, home

    wanted = server.strip().rstrip("/")
    explicit = os.environ.get(ENV)
    if explicit:
        migrate_legacy()
        return check_name(explicit), root() / explicit
    if legacy_identity():
        held = str(file_settings(config_path()).get("server") or "").rstrip("/")
        if not held or held == wanted:
            return None, home()
        migrate_legacy()
    existing = names()
    if not existing:
        return None, home()
    for name in existing:
        if str(read(name).get("server") or "").rstrip("/") == wanted:
            return name, root() / name
    return name_for(wanted), root() / name_for(wanted)


def remember(context: str | None = None, **values: str) -> None:
    """Store ``server``/``ca_fingerprint`` for ``context`` (default: the selected one) and
    make it current; without any context, in the config file as before contexts."""
    from lab.client.settings import set_setting

    name = context if context is not None else selected()
    if name is None:
        for key, value in values.items():
            set_setting(key, value)
        return
    write(name, **values)
    if context is not None:
        set_setting("context", name)
