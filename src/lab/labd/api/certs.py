"""Issued certificates: list and revoke. Admin API."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from lab.labd.access.auth import requires
from lab.labd.api.bodies import RevokeCert, body
from lab.labd.context import ctx
from lab.model import unstructure

bp = Blueprint("certs", __name__)


@bp.get("/api/certs")
@requires("user", action="certs:list", resource="cert/*")
async def list_() -> dict[str, Any]:
    subject = request.args.get("subject") or None
    certs = await ctx().store.certificates.list(subject=subject)
    return {"items": [unstructure(c) for c in certs]}


@bp.post("/api/certs/revoke")
@requires("user", action="certs:revoke", resource="cert/*")
async def revoke() -> dict[str, Any]:
    req = await body(RevokeCert)
    return {"revoked": await ctx().identities.revoke_target(req.target)}
