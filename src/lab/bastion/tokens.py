"""Secrets of the bastion: the admin token file and per-machine callback tokens.

Tokens are 32 random bytes, URL-safe base64 (so they can sit in a kernel command line, a URL
and a shell string unquoted). Only their SHA-256 is stored; checks are constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from lab.errors import ConfigError


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # The tokens carry 256 random bits, so a plain digest (no salt, no stretching) is enough.
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(hash_token(token), digest)


def load_or_create_admin_token(path: Path) -> str:
    """Read the admin token at ``path``, creating it (mode 0600) on first start.

    Raises ConfigError when the file exists but other users may read it, or is empty.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"{path}: admin token is readable by other users (mode {mode:o})",
                details={"hint": f"chmod 600 {path}"},
            ) from None
        token = path.read_text(encoding="ascii").strip()
        if not token:
            raise ConfigError(
                f"{path}: admin token file is empty", details={"hint": "delete it"}
            ) from None
        return token
    token = new_token()
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token
