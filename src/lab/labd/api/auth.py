"""Identity routes: CA bundle and CRL (public), enrollment (public, rate limited), renewal."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from quart import Blueprint, Response, request

from lab import pki
from lab.errors import Conflict
from lab.labd.access.auth import principal, public, requires
from lab.labd.api.answers import created
from lab.labd.api.bodies import EnrollAgent, EnrollUser, FinishRotation, Renew, body
from lab.labd.audit import entries as audit
from lab.labd.audit.entries import set_resource
from lab.labd.context import ctx

bp = Blueprint("auth", __name__)

PEM = "application/x-pem-file"


def limit_enrollment() -> None:
    """The per-address limit shared by every public enrollment route."""
    ctx().enroll_limiter.check(request.remote_addr or "unknown", time.monotonic())


@bp.get("/api/ca")
@public
async def ca_bundle() -> Response:
    return Response(ctx().ca.bundle_pem(), content_type=PEM)


@bp.get("/api/crl")
@public
async def crl() -> Response:
    c = ctx()
    revoked = [
        (r.serial, r.revoked_at) for r in await c.store.certificates.revoked() if r.revoked_at
    ]
    pem = pki.build_crl(c.ca.signer, revoked, next_update=datetime.now(UTC) + timedelta(hours=1))
    return Response(pem, content_type=PEM)


@bp.post("/api/auth/enroll")
@public
@created
async def enroll_agent() -> dict[str, Any]:
    limit_enrollment()
    req = await body(EnrollAgent)
    set_resource(f"server/{req.hostname}")
    out = await ctx().identities.enroll_agent(
        token=req.token, csr=req.csr, hostname=req.hostname, facts=req.facts, note=audit.note
    )
    return out


@bp.post("/api/auth/user-enroll")
@public
@created
async def enroll_user() -> dict[str, Any]:
    limit_enrollment()
    req = await body(EnrollUser)
    out = await ctx().identities.enroll_user(
        token=req.token, csr=req.csr, username=req.username, note=audit.note
    )
    set_resource(f"user/{out['user']}")  # the body may not name the user
    return out


@bp.post("/api/auth/renew")
@requires("server", "user", "bastion", action="auth:renew", resource="cert/self")
async def renew() -> dict[str, Any]:
    req = await body(Renew)
    who = principal()
    return await ctx().identities.renew(kind=who.kind, name=who.name, csr=req.csr)


@bp.get("/api/auth/whoami")
@requires("user", action="auth:whoami", resource="user/self")
async def whoami() -> dict[str, Any]:
    who = principal()
    return {
        "kind": who.kind,
        "name": who.name,
        "roles": who.role_names,
        "serial": who.serial,
        "not_after": who.not_after.isoformat(),
    }


@bp.get("/api/ca/status")
@requires("user", action="ca:get", resource="ca/*")
async def ca_status() -> dict[str, Any]:
    c = ctx()
    return {**c.ca.status(), "pending": await c.identities.pending_on_old_ca()}


@bp.post("/api/ca/rotate")
@requires("user", action="ca:rotate", resource="ca/*")
async def ca_rotate() -> dict[str, Any]:
    c = ctx()
    await c.ca.rotate()
    return {**c.ca.status(), "pending": await c.identities.pending_on_old_ca()}


@bp.post("/api/ca/rotate/finish")
@requires("user", action="ca:rotate", resource="ca/*")
async def ca_finish() -> dict[str, Any]:
    req = await body(FinishRotation)
    c = ctx()
    pending = await c.identities.pending_on_old_ca()
    if pending and not req.force and c.ca.state.rotating:
        raise Conflict(
            f"{len(pending)} identities still hold certificates from the old CA",
            details={"pending": pending, "hint": "wait for them to renew, or pass force"},
        )
    await c.ca.finish()
    c.ca.write_bundle(c.config.data_path)
    return {**c.ca.status(), "pending": []}
