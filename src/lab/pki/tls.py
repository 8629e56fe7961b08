"""stdlib :class:`ssl.SSLContext` builders for labd, the bastion, agents and the CLI.

``ssl`` loads certificate chains only from files, so the PEMs are written to a private
temporary directory (0700, files 0600; on ``/dev/shm`` when it exists, so keys stay in memory)
and removed right after loading.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lab.errors import ConfigError

ClientAuth = Literal["optional", "required", "none"]

_VERIFY_MODES: dict[str, ssl.VerifyMode] = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}

DEFAULT_SERVER_ALPN = ("h2", "http/1.1")


def _private_tmpdir() -> str:
    shm = "/dev/shm"  # noqa: S108 - private mkdtemp inside, not a fixed file name
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
    return tempfile.mkdtemp(prefix="labctl-tls-", dir=base)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def load_cert_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load (or replace, on a live context) the certificate and key ``ctx`` presents.

    ``ssl`` reads them only from files: they go to a private temp dir (0600) deleted at once.
    Raises :class:`ConfigError` for unusable material.
    """
    tmp = _private_tmpdir()
    try:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        _write_private(cert_path, cert_pem)
        _write_private(key_path, key_pem)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise ConfigError(f"certificate and key cannot be used for TLS: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cas(ctx: ssl.SSLContext, ca_bundle_pem: bytes) -> None:
    try:
        ctx.load_verify_locations(cadata=ca_bundle_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"CA bundle cannot be loaded: {exc}") from exc


def server_ssl_context(
    cert_pem: bytes,
    key_pem: bytes,
    ca_bundle_pem: bytes | None,
    *,
    client_auth: ClientAuth = "optional",
    alpn: Sequence[str] | None = DEFAULT_SERVER_ALPN,
) -> ssl.SSLContext:
    """A TLS >= 1.2 server context presenting ``cert_pem``/``key_pem``.

    ``client_auth`` sets whether clients must (``required``), may (``optional``) or cannot
    (``none``) present a certificate; presented certificates must chain to ``ca_bundle_pem``
    (needed unless ``none``). ALPN offers h2 and http/1.1 by default, like hypercorn.
    Raises :class:`ConfigError` for unusable material.
    """
    if client_auth not in _VERIFY_MODES:
        raise ConfigError(f"client_auth must be one of {', '.join(_VERIFY_MODES)}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(ctx, cert_pem, key_pem)
    if client_auth != "none":
        if not ca_bundle_pem:
            raise ConfigError("a CA bundle is needed to verify client certificates")
        _load_cas(ctx, ca_bundle_pem)
    ctx.verify_mode = _VERIFY_MODES[client_auth]
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_ssl_context(
    ca_bundle_pem: bytes,
    *,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    alpn: Sequence[str] | None = None,
) -> ssl.SSLContext:
    """A TLS >= 1.2 client context trusting only ``ca_bundle_pem``, checking hostnames.

    Give ``cert_pem`` and ``key_pem`` together to present a client certificate. For httpx pass
    the context as ``verify=ctx``; for trio-websocket use ``alpn=["http/1.1"]``.
    Raises :class:`ConfigError` for unusable material or only one of cert/key.
    """
    if (cert_pem is None) != (key_pem is None):
        raise ConfigError("client certificate and key must be given together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_cas(ctx, ca_bundle_pem)
    if cert_pem is not None and key_pem is not None:
        load_cert_chain(ctx, cert_pem, key_pem)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
