"""What labctl says when a WebSocket to labd cannot open or ends early, and the user's TLS
identity for it: shared by both stream clients (:mod:`lab.client.wsclient` on trio and
:mod:`lab.cli.exec_fast` on blocking sockets), so both say the same words.

Standard library and :mod:`lab.errors` only: the fast ``labctl exec`` imports this module.
"""

from __future__ import annotations

import json
import os
import ssl
import stat
from pathlib import Path
from typing import Any

from lab import errors
from lab.errors import LabError, Unauthenticated, Unavailable

CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
# What to do about a missing user identity (here, not in lab.client.api, so that commands which
# never speak HTTP need not import httpx to say it).
LOGIN_HINT = "run `labctl login --server URL --token TOKEN`"
# lab.proto.errors.CloseCode.REVOKED (a test keeps the two equal; lab.proto imports cattrs).
REVOKED = 4005
ABNORMAL = 1006

_BY_CODE: dict[str, type[LabError]] = {
    cls.code: cls
    for cls in (
        errors.Invalid,
        errors.Unauthenticated,
        errors.PermissionDenied,
        errors.NotFound,
        errors.Conflict,
        errors.TooLarge,
        errors.Unavailable,
    )
}
_BY_STATUS: dict[int, type[LabError]] = {cls.status: cls for cls in _BY_CODE.values()}


def lab_error(code: str, message: str, details: dict[str, Any] | None = None) -> LabError:
    """The :class:`LabError` for an error ``code`` labd sent (unknown codes: plain LabError)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = LabError(message, details=details)
        err.code = code
        return err
    return cls(message, details=details)


def ws_url(server: str, path: str) -> str:
    if server.startswith("https://"):
        return "wss://" + server.removeprefix("https://").rstrip("/") + path
    raise errors.Invalid(
        f"server URL {server!r} must be https://HOST[:PORT]", details={"fields": ["server"]}
    )


def rejected(status: int, body: bytes | None) -> LabError:
    """labd answered the upgrade with ``status`` (and its JSON error envelope, usually)."""
    message = f"labd refused the connection ({status})"
    details: dict[str, Any] = {}
    try:
        error = json.loads(body or b"")["error"]
        message, details = str(error["message"]), dict(error.get("details") or {})
    except (ValueError, KeyError, TypeError):
        pass
    if status == 401:
        details.setdefault("hint", "run `labctl login --server URL --token TOKEN`")
    cls = _BY_STATUS.get(status, LabError)
    return cls(message, details=details)


def closed(code: int | None, reason: str | None) -> LabError:
    """The error of a stream cut by the connection's end (``code`` 1006: no close frame)."""
    text = reason or "connection closed"
    if code == REVOKED:
        # labd ended the session: the certificate was revoked or the user disabled.
        return Unauthenticated(
            f"labd ended the session: {text}",
            details={"hint": "ask an admin for a new token, then run `labctl login`"},
        )
    return Unavailable(f"labd closed the stream ({code}: {text})")


def timed_out(server: str, seconds: float) -> LabError:
    return Unavailable(
        f"labd at {server} did not answer within {seconds:g} s",
        details={"hint": "is labd running? labctl doctor"},
    )


def handshake_failed(server: str, exc: Exception) -> LabError:
    return Unavailable(f"WebSocket handshake with {server} failed: {exc}")


def tls_failed(server: str, exc: ssl.SSLError) -> LabError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Unauthenticated(
            f"labd at {server} presented a certificate our CA bundle does not trust "
            f"({exc.verify_message})",
            details={"hint": "check the server URL, or log in again to refresh ca.pem"},
        )
    return Unauthenticated(
        f"TLS handshake with labd at {server} failed ({exc.reason or exc})",
        details={"hint": "your certificate may be expired or revoked; run `labctl login`"},
    )


def unreachable(server: str, exc: OSError) -> LabError:
    return Unavailable(
        f"cannot reach labd at {server}: {os_reason(exc)}",
        details={"hint": "is labd running? labctl doctor"},
    )


def os_reason(exc: OSError) -> str:
    """What a failed connect's OSError says: trio's (``all attempts to connect ... failed``,
    and lab.cli.exec_io's alike) carries the error of each address tried as its cause, and
    those name the reason (``Connection refused``)."""
    group = exc.__cause__
    if isinstance(group, BaseExceptionGroup):
        causes = [e for e in group.exceptions if isinstance(e, OSError)]
        if causes:
            return "; ".join(
                dict.fromkeys(os.strerror(e.errno) if e.errno else str(e) for e in causes)
            )
    return exc.strerror or str(exc) or repr(exc)


def identity_paths(directory: Path, *, hint: str) -> tuple[Path, Path, Path]:
    """``(ca, cert, key)`` in ``directory``.

    Raises :class:`Unauthenticated` (with ``hint``) when any is missing, and
    :class:`ConfigError` when the key is readable by group or others.
    """
    paths = (directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise Unauthenticated(
            f"no identity in {directory} (missing {', '.join(missing)})",
            details={"reason": "no_identity", "hint": hint},
        )
    key_path = paths[2]
    if stat.S_IMODE(os.stat(key_path).st_mode) & 0o077:
        raise errors.ConfigError(
            f"{key_path} is readable by other users",
            details={"hint": f"chmod 600 {key_path}"},
        )
    return paths


def identity_ssl_context(where: Path) -> ssl.SSLContext:
    """The mTLS context of the identity in ``where``, with ALPN http/1.1 for WebSockets.

    Built with the stdlib only, straight from the identity files (lab.pki would import
    cryptography and httpx). Raises :class:`Unauthenticated` for a missing identity,
    :class:`ConfigError` for an unusable one (as :func:`lab.pki.client_ssl_context` does).
    """
    ca, cert, key = identity_paths(where, hint=LOGIN_HINT)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cadata=ca.read_bytes().decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise errors.ConfigError(f"CA bundle cannot be loaded: {exc}") from exc
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise errors.ConfigError(f"certificate and key cannot be used for TLS: {exc}") from exc
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
