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


class SealedSecretUnreadable(ConfigError):
    """A sealed secret that does not open: sealed under another key or for another target, or
    not a sealed value at all (damaged in the database)."""

    code = "sealed_secret_unreadable"


_NONCE = 12
_TAG = 16


def unseal(key: bytes, target: str, sealed: str) -> str:
    """The secret ``sealed`` holds for ``target``; the empty string stays empty.

    Raises :class:`SealedSecretUnreadable` when it does not open with ``key`` for ``target``
    or is not a sealed value (unknown version, not base64, too short).
    """
    if not sealed:
        return ""
    if not sealed.startswith(_PREFIX):
        raise _unreadable(target, "is in an unknown format", "unknown_format")
    try:
        raw = base64.b64decode(sealed[len(_PREFIX) :], validate=True)
    except ValueError as exc:  # binascii.Error
        raise _unreadable(target, "is damaged (not base64)", "damaged") from exc
    if len(raw) < _NONCE + _TAG:
        raise _unreadable(target, "is damaged (too short)", "damaged")
    try:
        plain = AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], target.encode("utf-8"))
        return plain.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError) as exc:
        raise _unreadable(
            target,
            "does not open with this labd's key (was the audit key or CA passphrase changed?)",
            "wrong_key",
        ) from exc


def _unreadable(target: str, what: str, reason: str) -> SealedSecretUnreadable:
    return SealedSecretUnreadable(
        f"the power secret of {target} {what}", details={"target": target, "reason": reason}
    )
