"""Rendering of the iPXE scripts and kickstarts shipped in ``kickstart/``.

jinja2 with ``StrictUndefined`` (a missing value is a bug, never an empty string) and
autoescape off (these are shell and iPXE, not HTML). Only values that passed
:mod:`lab.bastion.validate` are handed to :class:`Templates`, so nothing else needs escaping.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import jinja2

from lab.bastion.cache import BoundedLRU, Miss
from lab.bastion.layout import ROLE_DATA_LV, VG_NAME, layout_for, reprovision_plan
from lab.errors import ConfigError, Invalid

SCRIPT_CACHE_SIZE = 4096
"""Rendered iPXE scripts kept (one per machine and state, about 500 bytes each)."""

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,512}")
_SAFE_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]_-]+(?:/[A-Za-z0-9._~/%-]*)?")


def template_dir() -> Path:
    """``lab/_data/kickstart`` in an installed wheel, else ``kickstart/`` of the checkout."""
    shipped = importlib.resources.files("lab") / "_data" / "kickstart"
    if shipped.is_dir():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[3] / "kickstart"
    if checkout.is_dir():
        return checkout
    raise ConfigError("kickstart templates not found (neither lab/_data/kickstart nor kickstart/)")


def check_url(url: str, *, field: str) -> str:
    if not _SAFE_URL.fullmatch(url):
        raise ConfigError(f"{field}: not a plain http(s) URL: {url!r}")
    return url.rstrip("/")


_FINGERPRINT = re.compile(r"SHA256:[0-9a-f]{64}")


def check_fingerprint(value: str) -> str:
    if not _FINGERPRINT.fullmatch(value):
        raise ConfigError(f"labd CA fingerprint is not SHA256:<64 hex digits>: {value!r}")
    return value


def check_token(token: str, *, field: str) -> str:
    if not _SAFE_TOKEN.fullmatch(token):
        raise Invalid(f"{field} has characters a kickstart cannot carry")
    return token


class Templates:
    """Renders every script the bastion serves; one instance per app (templates are cached)."""

    def __init__(self, *, base_url: str, repo: str, directory: Path | None = None) -> None:
        self.base_url = check_url(base_url, field="base_url")
        self.repo = check_url(repo, field="repo")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory or template_dir())),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - shell/iPXE output; inputs are validated instead
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            # The templates ship in the wheel and never change under a running server: compile
            # each once instead of stat()ing its file on every render.
            auto_reload=False,
        )
        self._scripts: BoundedLRU[tuple[Hashable, ...], str] = BoundedLRU(SCRIPT_CACHE_SIZE)

    def _render(self, name: str, **ctx: Any) -> str:
        return self.env.get_template(name).render(base_url=self.base_url, repo=self.repo, **ctx)

    def _render_cached(self, name: str, **ctx: str | bool) -> str:
        """:meth:`_render` for scripts that are a pure function of their (hashable) inputs;
        ``base_url`` is in the key because the server learns its port after creating us."""
        key = (name, self.base_url, self.repo, *sorted(ctx.items()))
        script = self._scripts.get(key)
        if isinstance(script, Miss):
            script = self._render(name, **ctx)
            self._scripts.put(key, script)
        return script

    def ipxe_discover(self, *, mac: str, token: str) -> str:
        return self._render_cached("ipxe/discover.ipxe.j2", mac=mac, token=token)

    def ipxe_install(
        self, *, mac: str, token: str, hostname: str, role: str, disk: str, reprovision: bool
    ) -> str:
        return self._render(
            "ipxe/install.ipxe.j2",
            mac=mac,
            token=token,
            hostname=hostname,
            role=role,
            disk=disk,
            reprovision=reprovision,
        )

    def ipxe_local(self, *, mac: str, hostname: str, state: str, method: str) -> str:
        return self._render_cached(
            "ipxe/local.ipxe.j2", mac=mac, hostname=hostname, state=state, method=method
        )

    def ipxe_failed(self, *, mac: str, hostname: str, phase: str, message: str, method: str) -> str:
        return self._render_cached(
            "ipxe/failed.ipxe.j2",
            mac=mac,
            hostname=hostname,
            phase=phase,
            message=message,
            method=method,
        )

    def discover_ks(self, *, mac: str, token: str) -> str:
        return self._render("discover.ks.j2", mac=mac, token=token)

    def install_ks(
        self,
        *,
        mac: str,
        token: str,
        hostname: str,
        role: str,
        disk: str,
        ssh_keys: list[str],
        reprovision: bool,
        join_token: str | None,
        labd_url: str | None,
        ca_fingerprint: str | None = None,
    ) -> str:
        if join_token is not None:
            check_token(join_token, field="join token")
            if labd_url is None:
                raise ConfigError("a join token needs labd_url to enrol against")
            labd_url = check_url(labd_url, field="labd_url")
            if ca_fingerprint is not None:
                ca_fingerprint = check_fingerprint(ca_fingerprint)
        plan = reprovision_plan(role)
        return self._render(
            "install.ks.j2",
            mac=mac,
            token=token,
            hostname=hostname,
            role=role,
            disk=disk,
            ssh_keys=ssh_keys,
            reprovision=reprovision,
            join_token=join_token,
            labd_url=labd_url,
            ca_fingerprint=ca_fingerprint,
            vg=VG_NAME,
            lvs=layout_for(role),
            foreign_lvs=[lv.name for r, lv in ROLE_DATA_LV.items() if r != role],
            keep=plan.keep,
            format=plan.format,
        )
