"""Ed25519 signatures for statements labd makes about itself (audit checkpoints).

The key is derived from a 32-byte seed the caller owns (labd derives it from the audit key), so
every replica holding the same audit key signs with the same key and needs no extra file; the
public key is published so witnesses can check a checkpoint without any secret.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lab.errors import ConfigError

_AUDIT_SALT = b"labctl audit key v1"


class Signer:
    """Signs with the Ed25519 key of ``seed`` (32 bytes)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        """The raw 32-byte public key."""

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def signature_holds(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the Ed25519 signature of ``data`` by ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def derive_audit_secret(secret: bytes) -> bytes:
    """32 bytes of audit key from an operator secret (``LABD_AUDIT_KEY`` or the CA passphrase).

    scrypt with a fixed label as salt: a guessable passphrase costs a guesser as much per try
    as the CA key does, and the result differs from anything else derived from that secret.
    """
    if not secret:
        raise ConfigError("the audit key secret must not be empty")
    return Scrypt(salt=_AUDIT_SALT, length=32, n=2**15, r=8, p=1).derive(secret)
