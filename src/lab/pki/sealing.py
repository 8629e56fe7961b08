"""Sealing a secret at rest (the power drivers' BMC passwords): AES-256-GCM, bound to its
target (the associated data).

labd derives the key from its audit key (``AuditKey.derive(SEAL_LABEL)``), so every replica
has it and the database alone never does. The clusters feature's secrets store will take
this over.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lab.errors import ConfigError

SEAL_LABEL = b"power driver secrets"
_PREFIX = "v1:"


def seal(key: bytes, target: str, secret: str) -> str:
    """``secret`` sealed for ``target``; the empty string stays empty (no secret)."""
    if not secret:
        return ""
    nonce = os.urandom(12)
    box = AESGCM(key).encrypt(nonce, secret.encode("utf-8"), target.encode("utf-8"))
    return _PREFIX + base64.b64encode(nonce + box).decode("ascii")


def unseal(key: bytes, target: str, sealed: str) -> str:
    if not sealed:
        return ""
    if not sealed.startswith(_PREFIX):
        raise ConfigError(f"the power secret of {target} is in an unknown format")
    raw = base64.b64decode(sealed[len(_PREFIX) :])
    try:
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], target.encode("utf-8"))
    except InvalidTag as exc:
        raise ConfigError(
            f"the power secret of {target} does not open with this labd's key "
            "(was the audit key or CA passphrase changed?)"
        ) from exc
    return plain.decode("utf-8")
