"""The identity a client keeps on disk: ``ca.pem``, ``cert.pem`` and ``key.pem`` in one directory.

labctl keeps them in :func:`lab.client.home.home` (``~/.labctl``), lab-agent in its state
directory. The directory is 0700 and the key 0600, created with that mode (never chmod-ed after
the fact, so there is no moment where the key is readable by others). Every file is written to
a temporary name and renamed over the old one, so a reader sees either the old or the new file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from attrs import frozen

from lab.client.wserrors import CA_FILE, CERT_FILE, KEY_FILE, LOGIN_HINT, identity_paths

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "KEY_FILE",
    "LOGIN_HINT",
    "Credentials",
    "ensure_private_dir",
    "load_credentials",
    "save_certificate",
    "save_credentials",
    "write_atomic",
]


@frozen(kw_only=True)
class Credentials:
    """PEM material of one client identity."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def ensure_private_dir(directory: Path) -> Path:
    """Create ``directory`` (and parents) with mode 0700; tighten it if it already exists."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(directory.stat().st_mode) & 0o077:
        directory.chmod(0o700)
    return directory


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file created with ``mode``, then rename.

    The data is fsync-ed before the rename, so after a crash the file is complete or old.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_credentials(directory: Path, creds: Credentials) -> None:
    """Store all three files in ``directory`` (0700): the key 0600, certificates 0644."""
    ensure_private_dir(directory)
    write_atomic(directory / KEY_FILE, creds.key_pem, mode=0o600)
    write_atomic(directory / CERT_FILE, creds.cert_pem)
    write_atomic(directory / CA_FILE, creds.ca_pem)


def save_certificate(directory: Path, cert_pem: bytes, ca_pem: bytes | None = None) -> None:
    """Replace the certificate (and the CA bundle when given), keeping the key."""
    write_atomic(directory / CERT_FILE, cert_pem)
    if ca_pem is not None:
        write_atomic(directory / CA_FILE, ca_pem)


def load_credentials(directory: Path, *, hint: str) -> Credentials:
    """Read the three files from ``directory``.

    Raises :class:`Unauthenticated` (with ``hint``) when any is missing, and
    :class:`ConfigError` when the key is readable by group or others.
    """
    ca, cert, key = identity_paths(directory, hint=hint)
    return Credentials(ca_pem=ca.read_bytes(), cert_pem=cert.read_bytes(), key_pem=key.read_bytes())
