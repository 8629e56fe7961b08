"""Join tokens: create (secret shown once), list, revoke. Admin API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from quart import Blueprint

from lab.errors import Invalid, NotFound
from lab.labd.access import escalation
from lab.labd.access.auth import principal, requires
from lab.labd.api.answers import created
from lab.labd.api.bastion import check_bastion_revoke, check_bastion_token
from lab.labd.api.bodies import CreateToken, body
from lab.labd.context import ctx
from lab.labd.identity.identities import MAX_TOKEN_TTL
from lab.model import JoinToken, unstructure

bp = Blueprint("tokens", __name__)


def token_view(token: JoinToken) -> dict[str, Any]:
    data: dict[str, Any] = unstructure(token)
    data.pop("secret_hash")
    return data


@bp.post("/api/tokens")
@requires("user", "bastion", action="tokens:create", resource="token/*")
@created
async def create() -> dict[str, Any]:
    req = await body(CreateToken)
    if principal().kind == "bastion":
        await check_bastion_token(req)
    # A user token's roles become a new user's: handing them out is a grant.
    for name in dict.fromkeys(req.roles):
        try:
            role = await ctx().store.roles.get(name)
        except NotFound:
            continue  # create_token names the unknown role
        escalation.check_handout(principal(), f"token for user/{req.user or '*'}", role)
    if not 0 < req.ttl_seconds <= MAX_TOKEN_TTL.total_seconds():
        # Checked before building a timedelta, which overflows on absurd values.
        raise Invalid(
            "ttl must be between 1 second and 365 days", details={"fields": ["body.ttl_seconds"]}
        )
    record, secret = await ctx().identities.create_token(
        kind=req.kind,
        roles=req.roles,
        ttl=timedelta(seconds=req.ttl_seconds),
        reusable=req.reusable,
        max_uses=req.max_uses,
        description=req.description,
        created_by=principal().subject,
        user=req.user,
        hostname=req.hostname,
        system_uuid=req.system_uuid,
        serial=req.serial,
        replace=req.replace,
    )
    return {**token_view(record), "token": secret}


@bp.get("/api/tokens")
@requires("user", action="tokens:list", resource="token/*")
async def list_() -> dict[str, Any]:
    return {"items": [token_view(t) for t in await ctx().store.tokens.list()]}


@bp.delete("/api/tokens/<token_id>")
@requires("user", "bastion", action="tokens:revoke", resource="token/{token_id}")
async def revoke(token_id: str) -> dict[str, Any]:
    tokens = ctx().store.tokens
    if principal().kind == "bastion":
        check_bastion_revoke(await tokens.get(token_id), principal().subject)
    return token_view(await tokens.revoke(token_id, at=datetime.now(UTC)))
