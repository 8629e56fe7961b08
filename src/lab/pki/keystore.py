"""Private keys at rest: AES-256-GCM under a key derived by scrypt from a passphrase.

Blob layout (all integers big-endian)::

    magic    b"LABKEY"     6 bytes
    version  1             1 byte
    log2_n   15            1 byte   scrypt cost N = 2**log2_n
    r        8             1 byte
    p        1             1 byte
    salt                   16 bytes (random per blob)
    nonce                  12 bytes (random per blob)
    ciphertext || GCM tag  the PEM key, encrypted; the 38-byte header above is the AAD

The blob is binary and never a PEM document, so a stray copy cannot be loaded as a key.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from lab.errors import ConfigError

MAGIC = b"LABKEY"
VERSION = 1
_HEADER = struct.Struct(">6sBBBB16s12s")
HEADER_SIZE = _HEADER.size

# N=2**15, r=8 costs ~32 MiB and tens of milliseconds: fine once per daemon start.
_LOG2_N, _R, _P = 15, 8, 1
# A tampered header must not make us allocate gigabytes: refuse costs beyond these.
_MAX_LOG2_N, _MAX_R, _MAX_P = 20, 16, 4

PASSPHRASE_ENV = "LABD_CA_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
PASSPHRASE_FILE = "ca-passphrase"  # noqa: S105 - a file name, not a secret


class WrongPassphrase(ConfigError):
    """The CA key blob does not decrypt with the passphrase we were given."""

    code = "wrong_passphrase"


def _derive(passphrase: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(passphrase)


def encrypt_private_key(key_pem: bytes, passphrase: bytes) -> bytes:
    """Encrypt ``key_pem`` for storage; see the module docstring for the blob format."""
    if not passphrase:
        raise ConfigError("CA passphrase must not be empty")
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    header = _HEADER.pack(MAGIC, VERSION, _LOG2_N, _R, _P, salt, nonce)
    key = _derive(passphrase, salt, _LOG2_N, _R, _P)
    return header + AESGCM(key).encrypt(nonce, key_pem, header)


def decrypt_private_key(blob: bytes, passphrase: bytes) -> bytes:
    """Decrypt a blob made by :func:`encrypt_private_key` and return the PEM key.

    Raises :class:`WrongPassphrase` when authentication fails (wrong passphrase or a blob that
    was altered) and :class:`ConfigError` when the blob is not in our format at all.
    """
    if len(blob) < HEADER_SIZE + 16 or not blob.startswith(MAGIC):
        raise ConfigError("CA key file is not a labctl encrypted key (bad header)")
    _magic, version, log2_n, r, p, salt, nonce = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise ConfigError(f"CA key file has format version {version}; this labctl reads {VERSION}")
    if not (1 <= log2_n <= _MAX_LOG2_N and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        raise ConfigError("CA key file has out-of-range scrypt parameters")
    header = blob[:HEADER_SIZE]
    key = _derive(passphrase, salt, log2_n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, blob[HEADER_SIZE:], header)
    except InvalidTag:
        raise WrongPassphrase(
            f"wrong CA passphrase: the CA key does not decrypt (check {PASSPHRASE_ENV} "
            f"or the {PASSPHRASE_FILE} file in the data directory)"
        ) from None


def load_or_create_keyfile(path: Path | str) -> bytes:
    """Return the secret in ``path``, creating it (32 random bytes, mode 0600) on first use.

    Creation uses ``O_CREAT | O_EXCL`` so two starting processes cannot both write one; the
    loser reads the winner's file. Raises :class:`ConfigError` if the file is empty, shorter
    than 32 bytes, or readable by group/others.
    """
    path = Path(path)
    secret = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror}") from exc
    else:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secret)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return secret
    return read_keyfile(path)


def read_keyfile(path: Path | str) -> bytes:
    """The secret in an existing key file. Raises :class:`ConfigError` if the file cannot be
    read, is shorter than 32 bytes, or is readable by group/others."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"key file {path} is accessible by group or others; chmod 600 it")
    if len(data) < 32:
        raise ConfigError(f"key file {path} holds {len(data)} bytes; expected at least 32")
    return data


def resolve_ca_passphrase(data_dir: Path | str, environ: Mapping[str, str] | None = None) -> bytes:
    """The CA passphrase: ``LABD_CA_PASSPHRASE`` if set and non-empty, else the key file.

    The key file is ``<data_dir>/ca-passphrase``, created by :func:`load_or_create_keyfile` on
    first use.
    """
    env = os.environ if environ is None else environ
    value = env.get(PASSPHRASE_ENV, "")
    if value:
        return value.encode("utf-8")
    return load_or_create_keyfile(Path(data_dir) / PASSPHRASE_FILE)
