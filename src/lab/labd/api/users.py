"""Users: create (with a one-time enrollment token), list, show, disable, enable. Admin API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from attrs import Factory, frozen
from quart import Blueprint

from lab.errors import Invalid, NotFound
from lab.labd.access import escalation
from lab.labd.access.auth import principal, requires
from lab.labd.access.user_sessions import DISABLED
from lab.labd.api.answers import created
from lab.labd.api.bodies import body
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.labd.identity.identities import check_username
from lab.model import TokenKind, User
from lab.model.text import Name

bp = Blueprint("users", __name__)

DEFAULT_TOKEN_TTL = 24 * 3600


@frozen(kw_only=True)
class CreateUser:
    name: Name
    roles: list[Name] = Factory(list)
    # How long the enrollment token of the new user stays valid.
    token_ttl_seconds: int = DEFAULT_TOKEN_TTL


async def user_view(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "disabled": user.disabled,
        "roles": await ctx().store.users.roles_of(user.id),
        "created_at": user.created_at.isoformat(),
    }


@bp.get("/api/users")
@requires("user", action="users:list", resource="user/*")
async def list_() -> dict[str, Any]:
    return {"items": [await user_view(u) for u in await ctx().store.users.list()]}


@bp.post("/api/users")
@requires("user", action="users:create", resource="user/*")
@created
async def create() -> dict[str, Any]:
    """Create the user with its roles and a one-time user token carrying the same roles; the
    token's secret is in this answer only."""
    req = await body(CreateUser)
    name = check_username(req.name)
    store = ctx().store
    roles = list(dict.fromkeys(req.roles))
    for role in roles:
        try:
            found = await store.roles.get(role)
        except NotFound:
            raise Invalid(f"unknown role {role!r}", details={"fields": ["body.roles"]}) from None
        escalation.check_handout(principal(), f"user/{name}", found)
    if not 0 < req.token_ttl_seconds <= 365 * 24 * 3600:
        raise Invalid(
            "token_ttl_seconds must be between 1 second and 365 days",
            details={"fields": ["body.token_ttl_seconds"]},
        )
    # The entry commits with the user; the token id (annotated by create_token) follows it.
    annotate(user=name, roles=roles)
    user = await store.users.create(User(name=name))
    for role in roles:
        await store.users.grant(user.id, role)
    token, secret = await ctx().identities.create_token(
        kind=TokenKind.USER,
        roles=roles,
        ttl=timedelta(seconds=req.token_ttl_seconds),
        description=f"enrollment of user/{name}",
        created_by=principal().subject,
        user=name,
    )
    return {
        **await user_view(user),
        "token": secret,
        "token_id": token.id,
        "token_expires_at": token.expires_at.isoformat(),
    }


@bp.get("/api/users/<name>")
@requires("user", action="users:get", resource="user/{name}")
async def get(name: str) -> dict[str, Any]:
    return await user_view(await ctx().store.users.get_by_name(name))


@bp.post("/api/users/<name>/disable")
@requires("user", action="users:disable", resource="user/{name}")
async def disable(name: str) -> dict[str, Any]:
    """Disable the user and revoke every valid certificate it holds; open sessions close."""
    c = ctx()
    user = await c.store.users.set_disabled(name, True)
    # Before the revocation, so the sessions report why they ended; another replica's
    # sessions end through the revocation it reloads.
    closed = c.user_sessions.close_user(name, DISABLED)
    try:
        revoked = await c.identities.revoke_target(f"user/{name}")
    except NotFound:
        revoked = []  # never enrolled, or already revoked
    annotate(revoked=revoked, sessions_closed=closed)
    return {**await user_view(user), "revoked": revoked}


@frozen(kw_only=True)
class ChangeRoles:
    roles: list[Name]


async def _change_roles(name: str, *, grant: bool) -> dict[str, Any]:
    req = await body(ChangeRoles)
    store = ctx().store
    user = await store.users.get_by_name(name)
    if not req.roles:
        raise Invalid("give at least one role", details={"fields": ["body.roles"]})
    for role in req.roles:
        try:
            found = await store.roles.get(role)
        except NotFound:
            raise Invalid(f"unknown role {role!r}", details={"fields": ["body.roles"]}) from None
        if grant:
            escalation.check_handout(principal(), f"user/{name}", found)
    annotate(roles=req.roles)  # before the writes: the details commit with the change
    for role in req.roles:
        if grant:
            await store.users.grant(user.id, role)
        else:
            await store.users.revoke(user.id, role)
    # Replicas cache nothing per user, but their sessions' roles are re-read on this signal.
    await store.replicas.bump_changes()
    return await user_view(user)


@bp.post("/api/users/<name>/grant")
@requires("user", action="users:grant", resource="user/{name}")
async def grant(name: str) -> dict[str, Any]:
    """Give roles to an existing user (user tokens never change an existing user's roles)."""
    return await _change_roles(name, grant=True)


@bp.post("/api/users/<name>/ungrant")
@requires("user", action="users:ungrant", resource="user/{name}")
async def ungrant(name: str) -> dict[str, Any]:
    """Take roles away from a user."""
    return await _change_roles(name, grant=False)


@bp.post("/api/users/<name>/enable")
@requires("user", action="users:enable", resource="user/{name}")
async def enable(name: str) -> dict[str, Any]:
    """Enable a disabled user; it needs a new token (labctl tokens create) to enroll again."""
    return await user_view(await ctx().store.users.set_disabled(name, False))
