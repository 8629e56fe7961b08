"""Envelope encryption for labd's secrets store (AES-256-GCM at both levels).

Each value is sealed under a *data key* (32 random bytes); data keys are stored wrapped by the
*key-encryption key* (KEK), which is never in the database: labd derives it from an operator
secret (a 0600 key file, else the CA passphrase) with scrypt under a label of its own. Every
ciphertext is bound to what it belongs to through the GCM associated data (a value to its name
and data key id, a data key to its id), so a row copied onto another name does not open.

Blobs are text (``v1:`` + base64 of nonce || ciphertext || tag) so one column type serves
SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from attrs import frozen
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from lab.errors import ConfigError, Unavailable

_KEK_SALT = b"labctl secrets key-encryption key v1"
_KEK_ID_LABEL = b"labctl secrets kek id"
_PREFIX = "v1:"
_NONCE = 12


class WrongSecretsKey(Unavailable):
    """A data key or value does not open with the key-encryption key labd has."""

    code = "wrong_secrets_key"


@frozen(repr=False)
class KeyEncryptionKey:
    """The KEK; ``kek_id`` (16 hex digits, an HMAC of the key) tells keys apart, not the key."""

    secret: bytes

    @property
    def kek_id(self) -> str:
        return hmac.new(self.secret, _KEK_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(kek_id={self.kek_id})"


def derive_kek(material: bytes) -> KeyEncryptionKey:
    """The KEK from an operator secret (key file bytes or labelled CA passphrase); ~50 ms."""
    if not material:
        raise ConfigError("the secrets key material must not be empty")
    return KeyEncryptionKey(Scrypt(salt=_KEK_SALT, length=32, n=2**15, r=8, p=1).derive(material))


def new_data_key() -> bytes:
    return os.urandom(32)


def _seal(key: bytes, plain: bytes, aad: bytes) -> str:
    nonce = os.urandom(_NONCE)
    return _PREFIX + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, aad)).decode()


def _open(key: bytes, blob: str, aad: bytes, what: str, hint: str) -> bytes:
    if not blob.startswith(_PREFIX):
        raise WrongSecretsKey(f"{what} is in an unknown format")
    try:
        raw = base64.b64decode(blob[len(_PREFIX) :], validate=True)
    except binascii.Error:
        raise WrongSecretsKey(f"{what} is not valid base64") from None
    try:
        return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], aad)
    except (InvalidTag, ValueError):
        raise WrongSecretsKey(f"{what} does not open: {hint}") from None


def wrap_data_key(kek: KeyEncryptionKey, key_id: str, data_key: bytes) -> str:
    return _seal(kek.secret, data_key, b"data key\x00" + key_id.encode())


def unwrap_data_key(kek: KeyEncryptionKey, key_id: str, wrapped: str) -> bytes:
    """The data key; :class:`WrongSecretsKey` if ``kek`` is not the one that wrapped it."""
    return _open(
        kek.secret,
        wrapped,
        b"data key\x00" + key_id.encode(),
        f"data key {key_id}",
        "wrong key-encryption key (LABD_SECRETS_KEY_FILE or the CA passphrase changed?)",
    )


def seal_value(data_key: bytes, key_id: str, name: str, value: bytes) -> str:
    return _seal(data_key, value, _value_aad(key_id, name))


def open_value(data_key: bytes, key_id: str, name: str, sealed: str) -> bytes:
    """The value; :class:`WrongSecretsKey` if it was altered or moved to another name."""
    return _open(
        data_key,
        sealed,
        _value_aad(key_id, name),
        f"secret {name!r}",
        "the stored value was altered or belongs to another name",
    )


def _value_aad(key_id: str, name: str) -> bytes:
    return b"value\x00" + key_id.encode() + b"\x00" + name.encode()
