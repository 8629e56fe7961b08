"""The error tree shared by every part of labctl.

Third-party exceptions are mapped to these at the seam (``raise ... from``). Each class carries
the HTTP status and the stable machine code used in the error envelope
``{"error": {"code", "message", "details"}}``; :func:`http_status` is the one mapping.
"""

from __future__ import annotations

from typing import Any


class LabError(Exception):
    """Root of every error labctl raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def envelope(self) -> dict[str, Any]:
        """The JSON error body every API returns."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class Invalid(LabError):
    """Input that does not validate; ``details["fields"]`` lists the wrong field paths."""

    status = 400
    code = "invalid"


class Unauthenticated(LabError):
    """No identity, or an identity we do not accept (bad token, missing certificate)."""

    status = 401
    code = "unauthenticated"


class PermissionDenied(LabError):
    """An identity that is known but not allowed to do this."""

    status = 403
    code = "permission_denied"


class NotFound(LabError):
    status = 404
    code = "not_found"


class Conflict(LabError):
    """The request clashes with stored state (duplicate name, token already used)."""

    status = 409
    code = "conflict"


class TooLarge(LabError):
    status = 413
    code = "too_large"


class RateLimited(LabError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, details: dict[str, Any] | None = None):
        super().__init__(message, details={"retry_after": retry_after, **(details or {})})
        self.retry_after = retry_after


class Unavailable(LabError):
    """A dependency is down or not connected (agent offline, database unreachable)."""

    status = 503
    code = "unavailable"


class ConfigError(LabError):
    """Configuration that cannot be used: unknown key, malformed file, unusable path."""

    status = 400
    code = "config"


class AddressInUse(Unavailable):
    """A daemon cannot bind its port: another process holds it."""


class DataDirUnusable(Unavailable):
    """A daemon's data directory cannot be created or written."""


class DatabaseUnreachable(Unavailable):
    """The database does not answer (or refuses us) while a daemon starts."""


class MissingDependency(ConfigError):
    """The configuration needs an optional package that is not installed (an extra)."""


class SchemaTooNew(LabError):
    """The database was written by a newer labctl; we refuse to touch it."""

    status = 503
    code = "schema_too_new"


def http_status(exc: BaseException) -> int:
    """The HTTP status for an exception; anything that is not a LabError is a 500."""
    return exc.status if isinstance(exc, LabError) else 500
