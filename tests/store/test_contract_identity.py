"""Contract: users, roles and permissions (+ seed), join tokens, certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio

from lab.errors import Conflict, NotFound, Unauthenticated
from lab.model import (
    Certificate,
    Effect,
    JoinToken,
    Permission,
    Role,
    TokenKind,
    User,
)
from lab.store import Store
from lab.store.seed import BUILTIN_ROLES

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def perm(effect: str, action: str, resource: str) -> Permission:
    return Permission(effect=Effect(effect), action=action, resource=resource)


async def test_users(store: Store) -> None:
    alice = await store.users.create(User(name="alice"))
    assert await store.users.get(alice.id) == alice
    assert await store.users.get_by_name("alice") == alice
    with pytest.raises(Conflict):
        await store.users.create(User(name="alice"))
    await store.users.create(User(name="bob"))
    assert [u.name for u in await store.users.list()] == ["alice", "bob"]
    disabled = await store.users.set_disabled("alice", True)
    assert disabled.disabled and (await store.users.get(alice.id)).disabled
    assert not (await store.users.set_disabled("alice", False)).disabled
    with pytest.raises(NotFound):
        await store.users.set_disabled("ghost", True)
    with pytest.raises(NotFound):
        await store.users.get("ghost")


async def test_grant_revoke_roles_of(store: Store) -> None:
    alice = await store.users.create(User(name="alice"))
    await store.users.grant(alice.id, "viewer")
    await store.users.grant(alice.id, "operator")
    await store.users.grant(alice.id, "viewer")  # idempotent
    assert await store.users.roles_of(alice.id) == ["operator", "viewer"]
    await store.users.revoke(alice.id, "viewer")
    assert await store.users.roles_of(alice.id) == ["operator"]
    with pytest.raises(NotFound):
        await store.users.grant(alice.id, "no-such-role")
    with pytest.raises(NotFound):
        await store.users.grant("ghost", "viewer")


async def test_seed_roles_are_present_and_builtin(store: Store) -> None:
    roles = {r.name: r for r in await store.roles.list()}
    for seeded in BUILTIN_ROLES:
        assert roles[seeded.name] == seeded
        assert roles[seeded.name].builtin
    assert perm("allow", "*:*", "*") in roles["admin"].permissions
    assert perm("deny", "users:*", "*") in roles["operator"].permissions
    assert perm("deny", "exec:*", "*") in roles["viewer"].permissions


async def test_role_upsert_replaces_permissions_in_order(store: Store) -> None:
    rules = (perm("allow", "servers:get", "server/*"), perm("deny", "exec:*", "server/db-*"))
    role = await store.roles.upsert(Role(name="ops-lite", description="d", permissions=rules))
    assert role.permissions == rules and not role.builtin
    replaced = await store.roles.upsert(Role(name="ops-lite", permissions=rules[1:]))
    assert replaced.permissions == rules[1:] and replaced.description == ""
    assert await store.roles.get("ops-lite") == replaced
    with pytest.raises(NotFound):
        await store.roles.get("ghost")


async def test_role_kubernetes_groups_round_trip(store: Store) -> None:
    role = await store.roles.upsert(
        Role(name="kube-ops", kubernetes_groups=("lab:ops", "system:masters"))
    )
    assert role.kubernetes_groups == ("lab:ops", "system:masters")
    assert (await store.roles.get("kube-ops")).kubernetes_groups == ("lab:ops", "system:masters")
    cleared = await store.roles.upsert(Role(name="kube-ops"))
    assert cleared.kubernetes_groups == ()
    admin = await store.roles.get("admin")
    assert admin.kubernetes_groups == ("system:masters",)
    assert (await store.roles.get("viewer")).kubernetes_groups == ()


async def test_role_add_remove_permission(store: Store) -> None:
    await store.roles.upsert(Role(name="r", permissions=(perm("allow", "a:b", "x/*"),)))
    added = await store.roles.add_permission("r", perm("deny", "c:d", "*"))
    assert added.permissions == (perm("allow", "a:b", "x/*"), perm("deny", "c:d", "*"))
    again = await store.roles.add_permission("r", perm("allow", "a:b", "x/*"))
    assert again.permissions == added.permissions
    removed = await store.roles.remove_permission("r", perm("allow", "a:b", "x/*"))
    assert removed.permissions == (perm("deny", "c:d", "*"),)
    with pytest.raises(NotFound):
        await store.roles.add_permission("ghost", perm("allow", "a:b", "*"))
    with pytest.raises(NotFound):
        await store.roles.remove_permission("ghost", perm("allow", "a:b", "*"))


async def test_role_delete_rules(store: Store) -> None:
    with pytest.raises(Conflict):
        await store.roles.delete("admin")
    await store.roles.upsert(Role(name="held"))
    alice = await store.users.create(User(name="alice"))
    await store.users.grant(alice.id, "held")
    with pytest.raises(Conflict):
        await store.roles.delete("held")
    await store.users.revoke(alice.id, "held")
    await store.roles.delete("held")
    with pytest.raises(NotFound):
        await store.roles.get("held")
    with pytest.raises(NotFound):
        await store.roles.delete("held")


def token(**kw: object) -> JoinToken:
    fields: dict[str, object] = {
        "kind": TokenKind.AGENT,
        "secret_hash": "h",
        "expires_at": T0 + timedelta(hours=1),
    }
    fields.update(kw)
    return JoinToken(**fields)  # type: ignore[arg-type]


async def test_token_create_get_list_revoke(store: Store) -> None:
    t = await store.tokens.create(
        token(kind=TokenKind.USER, roles=("operator", "viewer"), created_by="admin", created_at=T0)
    )
    assert await store.tokens.get(t.id) == t
    assert t.roles == ("operator", "viewer") and t.kind is TokenKind.USER
    with pytest.raises(Conflict):
        await store.tokens.create(token(id=t.id))
    other = await store.tokens.create(token(created_at=T0 + timedelta(minutes=1)))
    assert [x.id for x in await store.tokens.list()] == [t.id, other.id]
    revoked = await store.tokens.revoke(t.id, at=T0)
    assert revoked.revoked_at == T0
    again = await store.tokens.revoke(t.id, at=T0 + timedelta(minutes=5))
    assert again.revoked_at == T0  # the first revocation stands
    with pytest.raises(NotFound):
        await store.tokens.revoke("ghost", at=T0)
    with pytest.raises(NotFound):
        await store.tokens.get("ghost")


async def reason_of(store: Store, token_id: str, at: datetime = T0) -> str:
    with pytest.raises(Unauthenticated) as info:
        await store.tokens.consume(token_id, at=at)
    return str(info.value.details["reason"])


async def test_token_bindings_round_trip(store: Store) -> None:
    user = await store.tokens.create(token(kind=TokenKind.USER, user="ann", created_at=T0))
    agent = await store.tokens.create(
        token(
            hostname="node1",
            system_uuid="4c4c4544-0042",
            serial="abc123",
            replace=True,
            created_at=T0 + timedelta(minutes=1),
        )
    )
    assert await store.tokens.get(user.id) == user and user.user == "ann"
    assert (user.hostname, user.replace) == (None, False)
    got = await store.tokens.get(agent.id)
    assert (got.hostname, got.system_uuid, got.serial, got.replace) == (
        "node1",
        "4c4c4544-0042",
        "abc123",
        True,
    )
    assert await store.tokens.list() == [user, agent]
    consumed = await store.tokens.consume(agent.id, at=T0)
    assert consumed.hostname == "node1" and consumed.replace


async def test_token_consume_one_time(store: Store) -> None:
    t = await store.tokens.create(token())
    before = await store.tokens.consume(t.id, at=T0)
    assert before.uses == 0 and before.id == t.id
    assert (await store.tokens.get(t.id)).uses == 1
    assert await reason_of(store, t.id) == "used"
    assert await reason_of(store, "ghost") == "unknown"


async def test_token_consume_reasons(store: Store) -> None:
    expired = await store.tokens.create(token(expires_at=T0))
    assert await reason_of(store, expired.id, at=T0) == "expired"
    revoked = await store.tokens.create(token())
    await store.tokens.revoke(revoked.id, at=T0)
    assert await reason_of(store, revoked.id) == "revoked"
    assert (await store.tokens.get(revoked.id)).uses == 0


async def test_token_consume_reusable_with_max(store: Store) -> None:
    t = await store.tokens.create(token(reusable=True, max_uses=2))
    assert (await store.tokens.consume(t.id, at=T0)).uses == 0
    assert (await store.tokens.consume(t.id, at=T0)).uses == 1
    assert await reason_of(store, t.id) == "used"
    unlimited = await store.tokens.create(token(reusable=True))
    for _ in range(5):
        await store.tokens.consume(unlimited.id, at=T0)
    assert (await store.tokens.get(unlimited.id)).uses == 5


async def test_token_consume_race_exactly_one_wins(store: Store) -> None:
    t = await store.tokens.create(token())
    won: list[JoinToken] = []
    lost: list[str] = []

    async def consume() -> None:
        try:
            won.append(await store.tokens.consume(t.id, at=T0))
        except Unauthenticated as exc:
            lost.append(exc.details["reason"])

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(consume)
    assert len(won) == 1
    assert lost == ["used"] * 7
    assert (await store.tokens.get(t.id)).uses == 1


def cert(serial: str, subject: str, day: int) -> Certificate:
    return Certificate(
        serial=serial,
        subject=subject,
        profile="agent",
        issuer_fingerprint="ff",
        not_before=T0 + timedelta(days=day),
        not_after=T0 + timedelta(days=day + 30),
    )


async def test_certificates(store: Store) -> None:
    c1 = await store.certificates.record(cert("01", "server/web1", 0))
    c2 = await store.certificates.record(cert("02", "server/web1", 1))
    c3 = await store.certificates.record(cert("03", "user/alice", 2))
    assert await store.certificates.get("01") == c1
    with pytest.raises(Conflict):
        await store.certificates.record(cert("01", "server/other", 0))
    assert await store.certificates.list() == [c1, c2, c3]
    assert await store.certificates.list(subject="server/web1") == [c1, c2]
    assert await store.certificates.revoked() == []
    revoked = await store.certificates.revoke("02", at=T0)
    assert revoked.revoked_at == T0
    assert (await store.certificates.revoke("02", at=T0 + timedelta(1))).revoked_at == T0
    assert await store.certificates.revoked() == [revoked]
    with pytest.raises(NotFound):
        await store.certificates.revoke("ff", at=T0)
    with pytest.raises(NotFound):
        await store.certificates.get("ff")
