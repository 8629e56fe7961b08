"""The secrets store's key-encryption key (KEK): never in the database.

Where it comes from, first match wins:

1. ``secrets_key_file`` (``LABD_SECRETS_KEY_FILE``): a key file of at least 32 bytes, mode
   0600. Give every replica the same file (e.g. from one Kubernetes Secret).
2. Otherwise the CA passphrase (``LABD_CA_PASSPHRASE`` or the ``ca-passphrase`` key file in
   the data dir), under a label of its own. Replicas already share the CA passphrase.

Either is stretched with scrypt (:func:`lab.pki.derive_kek`), so the KEK is unrelated to the
CA key's encryption key and to the audit key derived from the same passphrase.
"""

from __future__ import annotations

from pathlib import Path

from lab import pki
from lab.errors import ConfigError

SECRETS_KEY_FILE_ENV = "LABD_SECRETS_KEY_FILE"
_FROM_FILE = b"labctl-secrets-key-file\x00"
_FROM_CA_PASSPHRASE = b"labctl-secrets\x00"


def key_encryption_key(key_file: str, ca_passphrase: bytes) -> pki.KeyEncryptionKey:
    """The KEK (see the module docstring); ~50 ms of scrypt. ``ConfigError`` for a key file
    that is missing, short or readable by others."""
    if key_file:
        return pki.derive_kek(_FROM_FILE + pki.read_keyfile(key_file))
    return pki.derive_kek(_FROM_CA_PASSPHRASE + ca_passphrase)


def previous_keys(path: Path) -> list[pki.KeyEncryptionKey]:
    """The KEKs ``path`` may have been: a former secrets key file, or a former CA passphrase
    (raw, or as typed into a file with a trailing newline). Rotation picks the one whose id
    matches a stored data key."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"{path} is accessible by group or others; chmod 600 it")
    candidates = {data, data.rstrip(b"\r\n")} - {b""}
    keys = [pki.derive_kek(_FROM_FILE + c) for c in candidates if len(c) >= 32]
    keys += [pki.derive_kek(_FROM_CA_PASSPHRASE + c) for c in candidates]
    return keys
