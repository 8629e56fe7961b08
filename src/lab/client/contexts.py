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
from lab.client.home import (
    CONTEXT_FILE,
    CONTEXT_KEYS,
    check_context_name,
    config_path,
    contexts_root,
    home,
    is_context_name,
    read_context,
)
from lab.client.settings import file_settings, set_setting, unset_setting
from lab.errors import NotFound

ENV = "LABCTL_CONTEXT"
IDENTITY_FILES = (KEY_FILE, CERT_FILE, CA_FILE)


def name_for(server: str) -> str:
    """The context named after a server URL: ``https://lab.example:3100`` → ``lab.example``
    (the port joins the name when it is not labd's default, 3100)."""
    parts = urlsplit(server)
    host = (parts.hostname or "labd").lower()
    name = host if parts.port in (None, 3100) else f"{host}-{parts.port}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:63]


def write(name: str, **values: str) -> None:
    """Update settings of context ``name`` (created 0700 when new)."""
    directory = ensure_private_dir(contexts_root() / check_context_name(name))
    data = read_context(name) if (directory / CONTEXT_FILE).exists() else {}
    data.update(values)
    text = yaml.safe_dump(data, sort_keys=True).encode()
    write_atomic(directory / CONTEXT_FILE, text, mode=0o600)


def names() -> list[str]:
    base = contexts_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and is_context_name(p.name))


def selected(environ: dict[str, str] | None = None) -> str | None:
    """The context in use: ``LABCTL_CONTEXT`` (``--context``), else the ``context`` setting."""
    env = os.environ if environ is None else environ
    name = env.get(ENV) or str(file_settings(config_path(env)).get("context") or "")
    return name or None


def identity_dir() -> Path:
    """Where the identity in use lives: the selected context's directory, else the home.

    Raises :class:`NotFound` for a selected context that does not exist.
    """
    name = selected()
    if name is None:
        return home()
    migrate_legacy()
    directory = contexts_root() / check_context_name(name)
    if not directory.is_dir():
        raise NotFound(
            f"no context named {name!r}",
            details={"hint": "labctl config get-contexts lists them; labctl login creates one"},
        )
    return directory


def legacy_identity() -> bool:
    return (home() / CERT_FILE).is_file()


def migrate_legacy() -> str | None:
    """Move the identity kept directly in the home into a context named after its server.

    Returns the new context's name (None when there was nothing to move). The ``context``
    setting points at it unless another context is already current.
    """
    if not legacy_identity():
        return None
    settings = file_settings(config_path())
    server = str(settings.get("server") or os.environ.get("LABCTL_SERVER") or "")
    name = name_for(server) if server else "default"
    directory = ensure_private_dir(contexts_root() / name)
    for file in IDENTITY_FILES:
        source = home() / file
        if source.exists():
            os.replace(source, directory / file)
    values = {k: str(settings[k]) for k in CONTEXT_KEYS if settings.get(k)}
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
        {"current": "*" if name == current else "", "name": name, **read_context(name)}
        for name in names()
    ]


def use(name: str) -> None:
    """Make ``name`` the current context; NotFound when there is no such context."""
    migrate_legacy()
    if check_context_name(name) not in names():
        raise NotFound(
            f"no context named {name!r}",
            details={"hint": "labctl config get-contexts lists them; labctl login creates one"},
        )
    set_setting("context", name)


def remove(name: str) -> None:
    """Delete context ``name`` (its identity included); unset it when it was current."""
    directory = contexts_root() / check_context_name(name)
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
    wanted = server.strip().rstrip("/")
    explicit = os.environ.get(ENV)
    if explicit:
        migrate_legacy()
        return check_context_name(explicit), contexts_root() / explicit
    if legacy_identity():
        held = str(file_settings(config_path()).get("server") or "").rstrip("/")
        if not held or held == wanted:
            return None, home()
        migrate_legacy()
    existing = names()
    if not existing:
        return None, home()
    for name in existing:
        if str(read_context(name).get("server") or "").rstrip("/") == wanted:
            return name, contexts_root() / name
    return name_for(wanted), contexts_root() / name_for(wanted)


def remember(context: str | None = None, **values: str) -> None:
    """Store ``server``/``ca_fingerprint`` for ``context`` (default: the selected one) and
    make it current; without any context, in the config file as before contexts."""
    name = context if context is not None else selected()
    if name is None:
        for key, value in values.items():
            set_setting(key, value)
        return
    write(name, **values)
    if context is not None:
        set_setting("context", name)
