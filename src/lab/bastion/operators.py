"""Who may use the bastion's operator API, and how that is decided.

* A **standalone** bastion knows one operator: the holder of its admin token file
  (``Authorization: Bearer <data dir>/admin-token``).
* A bastion **joined to labd** takes labd's users instead, on its TLS operator listener
  (``operator_port``, 8443): the client presents its labd user certificate, the bastion checks
  it against labd's CA bundle (signature, validity, clientAuth), then asks labd
  (``POST /api/auth/check`` over the bastion's own certificate) whether that user, with that
  certificate serial, may do the route's action (``provision:*`` on ``machine/...``). labd
  answers from its records (the certificate is that user's and not revoked; the user exists and
  is enabled) and its RBAC rules, and audits the question with its answer. The admin token is
  refused on a joined bastion, so revoking a user or a certificate in labd closes the
  bastion to them too.

Pure of HTTP: the app hands over the peer certificate (DER, from the ASGI ``tls`` extension)
and the bearer token.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from lab.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from lab.pki import CACert

ADMIN = "admin"
"""The identity behind the admin token of a standalone bastion."""


class UserCheck(Protocol):
    """labd, as a joined bastion asks it about its users (see LabdTokenSource)."""

    def trusted_cas(self) -> Sequence[CACert]: ...

    async def check_user(
        self, user: str, serial: str, action: str, resource: str
    ) -> tuple[bool, str]: ...


class Operators:
    """The operator API's authentication and authorization, one call per request."""

    def __init__(self, admin_token: str, labd: UserCheck | None = None, hint: str = "") -> None:
        self._admin_token = admin_token
        self._labd = labd
        self._hint = hint

    @property
    def joined(self) -> bool:
        return self._labd is not None

    async def authorize(
        self, peer_der: bytes | None, bearer: str | None, action: str, resource: str
    ) -> str:
        """The caller (``admin`` or ``user/NAME``) if it may do ``action`` on ``resource``.

        Raises :class:`Unauthenticated` (no credential, a wrong token, a certificate labd's CA
        did not issue or that expired, the admin token on a joined bastion),
        :class:`PermissionDenied` (not a user certificate; labd's RBAC says no, with its
        reason) and :class:`Unavailable` (labd cannot be asked: nothing is allowed then).
        """
        if peer_der is not None:
            return await self._labd_user(peer_der, action, resource)
        if self._labd is not None:
            raise Unauthenticated(
                "this bastion is joined to labd: its operator API takes labd user "
                "certificates, not the admin token",
                details={"reason": "joined", "hint": self._hint},
            )
        token = bearer or ""
        if not bearer or not hmac.compare_digest(token.encode(), self._admin_token.encode()):
            raise Unauthenticated(
                "admin token missing or wrong",
                details={"hint": "send Authorization: Bearer <data dir>/admin-token"},
            )
        return ADMIN

    async def _labd_user(self, der: bytes, action: str, resource: str) -> str:
        from lab import pki

        if self._labd is None:
            raise Unauthenticated(
                "this bastion is not joined to labd: use its admin token",
                details={"reason": "not_joined"},
            )
        ident = pki.verify_peer(der, self._labd.trusted_cas(), at=datetime.now(UTC))
        if ident.kind != "user":
            raise PermissionDenied(
                f"a {ident.kind} certificate cannot use the operator API",
                details={"reason": "wrong_profile", "allowed": ["user"]},
            )
        allowed, reason = await self._labd.check_user(ident.name, ident.serial, action, resource)
        if not allowed:
            raise PermissionDenied(
                f"{ident.subject} may not {action} on {resource}",
                details={"action": action, "resource": resource, "reason": reason},
            )
        return ident.subject


__all__ = ["ADMIN", "Operators", "UserCheck"]
