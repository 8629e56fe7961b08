"""Probe a daemon's public /healthz with the standard library (fast to import)."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lab.errors import Unavailable


def is_healthy(url: str, *, timeout: float = 2.0, cafile: Path | None = None) -> bool:
    """GET ``url``/healthz; for https, trust only ``cafile`` (not healthy while it is absent)."""
    context = None
    if url.startswith("https:"):
        if cafile is None or not cafile.exists():
            return False
        context = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(  # noqa: S310 - url is http(s) built from our config
            url.rstrip("/") + "/healthz", timeout=timeout, context=context
        ) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(
    url: str,
    *,
    timeout: float,
    alive: Callable[[], None] = lambda: None,
    cafile: Path | None = None,
) -> None:
    """Poll until ``url`` is healthy; ``alive()`` raises if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        if is_healthy(url, timeout=1.0, cafile=cafile):
            return
        time.sleep(0.1)
    raise Unavailable(f"{url} did not become healthy within {timeout:.0f}s")
