"""Bastions joining labd, and the little a bastion certificate may do afterwards.

A PXE bastion joins once (``lab-bastion join``) with a one-time user join token carrying the
``admin`` role and gets a ``bastion/<name>`` certificate. With it the bastion may:

* ``POST /api/tokens`` for a one-time ``agent`` token living at most
  :data:`BASTION_MAX_TOKEN_TTL`, bound to a hostname (and, when the bastion discovered them, to
  the machine's DMI system UUID and serial), embedded in that install's kickstart. ``replace``
  (a reprovision an operator asked the bastion for) is allowed only for a server labd knows
  and that this bastion installed, or whose certificates an admin revoked
  (:func:`_replace_problem`). Checked by :func:`check_bastion_token`, called from the tokens
  route, and audited like every create;
* ``DELETE /api/tokens/{id}`` for a token it created itself (the install ended: enrolled,
  failed, forgotten or queued again), checked by :func:`check_bastion_revoke`;
* ``GET /api/servers/{name}`` (to learn that an installed machine's agent enrolled);
* ``POST /api/auth/renew`` for its own certificate;
* ``POST /api/auth/check``: may the labd user whose certificate (serial) the bastion verified
  on its operator listener do ``action`` on ``resource``? labd answers from its own records
  (the certificate is that user's and not revoked, the user exists and is enabled) and RBAC,
  and audits the question with its answer (:func:`check_user`).

Every other route refuses a bastion certificate (``wrong_profile``, 403).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from attrs import frozen
from quart import Blueprint

from lab.errors import Invalid, NotFound, PermissionDenied, Unauthenticated
from lab.labd.access import rbac
from lab.labd.access.auth import principal, public, requires
from lab.labd.api.answers import created
from lab.labd.api.auth import limit_enrollment
from lab.labd.api.bodies import CreateToken, body
from lab.labd.audit import entries as audit
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.model import JoinToken, TokenKind
from lab.model.text import Name

bp = Blueprint("bastion", __name__)

BASTION_MAX_TOKEN_TTL = timedelta(hours=24)


@frozen(kw_only=True)
class EnrollBastion:
    token: str
    csr: str
    name: Name


@bp.post("/api/auth/bastion-enroll")
@public
@created
async def enroll_bastion() -> dict[str, Any]:
    limit_enrollment()
    req = await body(EnrollBastion)
    audit.set_resource(f"bastion/{req.name}")
    out = await ctx().identities.enroll_bastion(
        token=req.token, csr=req.csr, name=req.name, note=audit.note
    )
    return out


async def check_bastion_token(req: CreateToken) -> None:
    """Raise PermissionDenied unless ``req`` is a one-time, hostname-bound agent token of at
    most 24 h, asking ``replace`` only for a server this bastion may take over."""
    annotate(
        kind=str(req.kind),
        ttl_seconds=req.ttl_seconds,
        description=req.description,
        hostname=req.hostname,
        replace=req.replace,
    )
    problem = None
    if req.kind is not TokenKind.AGENT:
        problem = f"a bastion may only create agent tokens, not {req.kind} tokens"
    elif req.reusable:
        problem = "a bastion may only create one-time tokens"
    elif req.ttl_seconds > BASTION_MAX_TOKEN_TTL.total_seconds():
        problem = "a bastion's tokens live at most 24 h (ttl_seconds <= 86400)"
    elif not req.hostname:
        problem = "a bastion's tokens are bound to the hostname of the machine it installs"
    elif req.replace:
        problem = await _replace_problem(req.hostname.lower(), principal().subject)
    if problem is not None:
        raise PermissionDenied(problem, details={"reason": "bastion_limit"})


async def _replace_problem(name: str, bastion: str) -> str | None:
    """Why ``bastion`` may not mint a takeover token for ``server/<name>``, or None.

    It may when labd knows the server and either its agent was last enrolled with a token of
    this bastion (a machine it installed, reprovisioned) or the server holds no live
    certificate (an admin revoked it: the name is free to be taken again). Taking over a live
    server that someone else enrolled needs an admin.
    """
    store = ctx().store
    try:
        server = await store.servers.get_by_name(name)
    except NotFound:
        return f"no server {name} to replace: a bastion replaces only known servers"
    try:
        agent = await store.agents.get_by_server(server.id)
    except NotFound:
        creator = None
    else:
        creator = agent.enrollment.get("token_created_by")
    if creator == bastion:
        return None
    at = datetime.now(UTC)
    live = [
        c
        for c in await store.certificates.list(subject=f"server/{name}")
        if c.revoked_at is None and c.not_after > at
    ]
    if not live:
        return None
    return (
        f"server/{name} was not installed by {bastion}: an admin revokes its certificate first "
        f"(labctl certs revoke server/{name})"
    )


def check_bastion_revoke(token: JoinToken, bastion: str) -> None:
    """Raise PermissionDenied unless the bastion ``bastion/<name>`` created ``token``."""
    if token.created_by != bastion:
        raise PermissionDenied(
            "a bastion may only revoke the tokens it created",
            details={"reason": "bastion_limit"},
        )


@frozen(kw_only=True)
class CheckUser:
    user: Name
    serial: Name
    action: Name
    resource: Name


@bp.post("/api/auth/check")
@requires("bastion", action="auth:check", resource="user/*")
async def check_user() -> dict[str, Any]:
    """RBAC for a bastion's operator API: always 200, ``allowed`` says the answer."""
    req = await body(CheckUser)
    for field, value in (("action", req.action), ("resource", req.resource)):
        if not value or len(value) > 256 or not value.isprintable():
            raise Invalid(
                f"{field} must be 1-256 printable characters",
                details={"fields": [f"body.{field}"]},
            )
    annotate(user=req.user, action=req.action, resource=req.resource, serial=req.serial)
    allowed, reason = await _decide(req)
    annotate(allowed=allowed, reason=reason)
    return {
        "user": req.user,
        "action": req.action,
        "resource": req.resource,
        "allowed": allowed,
        "reason": reason,
    }


async def _decide(req: CheckUser) -> tuple[bool, str]:
    c = ctx()
    serial = req.serial.lower()
    try:
        cert = await c.store.certificates.get(serial)
    except NotFound:
        return False, f"certificate {serial} was not issued by this labd"
    if cert.subject != f"user/{req.user}" or cert.profile != "user":
        return False, f"certificate {serial} is not user/{req.user}'s"
    if cert.revoked_at is not None or await c.revocations.is_revoked(serial):
        return False, f"certificate {serial} has been revoked"
    try:
        roles = await c.identities.user_roles(req.user)
    except Unauthenticated as exc:
        return False, exc.message
    decision = rbac.decide(roles, req.action, req.resource)
    return decision.allowed, decision.explain()
