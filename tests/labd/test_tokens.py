"""Join-token rules without a labd: the token format, the secret's hash, the bindings a token
may carry, when it is usable, and create/check/redeem on a real SQLite store with labd's clock
pinned."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from lab.errors import Invalid, PermissionDenied, Unauthenticated
from lab.labd.identity import identities as identity
from lab.labd.identity.ca import CAService
from lab.labd.identity.identities import (
    Identities,
    Revocations,
    bound_username,
    check_agent_binding,
    check_hostname,
    check_username,
    token_binding,
    token_trace,
    usable,
)
from lab.labd.identity.secrets import hash_secret, new_token, secret_matches, split_token
from lab.model import JoinToken, TokenKind
from lab.store import Store, open_store
from lab.store.rules import before_use, token_refusal

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def token(**kw: Any) -> JoinToken:
    fields: dict[str, Any] = {
        "id": "t1",
        "kind": TokenKind.AGENT,
        "secret_hash": "h",
        "expires_at": T0 + timedelta(hours=1),
    }
    return JoinToken(**{**fields, **kw})


def reason(exc: pytest.ExceptionInfo[Exception]) -> Any:
    details: dict[str, Any] = getattr(exc.value, "details", {})
    return details.get("reason")


# --- the token string -----------------------------------------------------------------------


def test_new_token_is_id_dot_secret_and_stores_only_the_hash() -> None:
    token_id, full, hashed = new_token()
    tid, secret = split_token(full)
    assert tid == token_id and full == f"{token_id}.{secret}"
    assert len(secret) == 43  # 32 random bytes, base64url
    assert hashed == hashlib.sha256(secret.encode()).hexdigest() == hash_secret(secret)
    assert secret not in hashed
    assert secret_matches(secret, hashed)
    assert not secret_matches(secret + "x", hashed)
    assert new_token()[1] != full


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("abc.def", ("abc", "def")),
        ("  abc.def\n", ("abc", "def")),  # pasted with blanks
        ("a.b.c", ("a", "b.c")),  # the secret may hold dots; the id may not
        ("a." + "s" * 254, ("a", "s" * 254)),  # 256 characters: the longest allowed
    ],
)
def test_split_token(text: str, parts: tuple[str, str]) -> None:
    assert split_token(text) == parts


@pytest.mark.parametrize(
    "text",
    ["", ".", "abc", "abc.", ".def", "  .def", "abc.  ", "a." + "s" * 255, "a.b" + " " * 254],
)
def test_malformed_tokens(text: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        split_token(text)
    assert info.value.message == "malformed join token"
    assert info.value.details == {"reason": "malformed"}


# --- names and bindings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("web1", "web1"),
        ("Web-1.Lab", "web-1.lab"),
        ("a" * 63, "a" * 63),
        ("a" * 64, None),
        ("-web", None),
        ("web-", None),
        ("web_1", None),
        ("", None),
        ("web..lab", None),
        ("web\n", None),
    ],
)
def test_check_hostname(name: str, ok: str | None) -> None:
    if ok is not None:
        assert check_hostname(name) == ok
        return
    with pytest.raises(Invalid) as info:
        check_hostname(name)
    assert info.value.message == "hostname is not a valid RFC 1123 name"
    assert info.value.details == {"fields": ["body.hostname"]}


@pytest.mark.parametrize(
    ("name", "ok"),
    [("ann", True), ("_svc.bot-1", True), ("a" * 64, True), ("a" * 65, False), ("Ann", False)],
)
def test_check_username(name: str, ok: bool) -> None:
    if ok:
        assert check_username(name) == name
        return
    with pytest.raises(Invalid) as info:
        check_username(name)
    assert info.value.details == {"fields": ["body.username"]}
    assert info.value.message == (
        "username must be lowercase letters, digits, '_', '.', '-' (max 64)"
    )


def fields_of(exc: pytest.ExceptionInfo[Invalid]) -> Any:
    return exc.value.details["fields"]


async def test_user_token_bindings(identities: Identities) -> None:
    made, _ = await identities.create_token(kind=TokenKind.USER, ttl=timedelta(hours=1), user="ann")
    assert (made.user, made.hostname, made.replace) == ("ann", None, False)
    with pytest.raises(Invalid) as info:
        await identities.create_token(kind=TokenKind.USER, ttl=timedelta(hours=1))
    assert fields_of(info) == ["body.user"]
    assert info.value.message == "a user token is created for one user: give user"
    bootstrap, _ = await identities.create_token(
        kind=TokenKind.USER, ttl=timedelta(hours=1), bind_user=False
    )
    assert bootstrap.user is None
    with pytest.raises(Invalid) as info:
        await identities.create_token(kind=TokenKind.USER, ttl=timedelta(hours=1), user="Ann")
    assert fields_of(info) == ["body.user"]
    assert info.value.message == "user must be lowercase letters, digits, '_', '.', '-' (max 64)"
    with pytest.raises(Invalid) as info:
        await identities.create_token(
            kind=TokenKind.USER,
            ttl=timedelta(hours=1),
            user="ann",
            hostname="web1",
            serial="s",
            replace=True,
        )
    assert info.value.message == "user tokens take no host binding"
    assert fields_of(info) == ["body.hostname", "body.serial", "body.replace"]
    with pytest.raises(Invalid) as info:
        await identities.create_token(
            kind=TokenKind.USER, ttl=timedelta(hours=1), user="ann", system_uuid="u"
        )
    assert fields_of(info) == ["body.system_uuid"]


async def test_agent_token_bindings(identities: Identities) -> None:
    made, _ = await identities.create_token(
        kind=TokenKind.AGENT,
        ttl=timedelta(hours=1),
        hostname="Web1",
        system_uuid=" ABC-1 ",
        serial="SN9",
        replace=True,
    )
    assert (made.user, made.hostname, made.system_uuid, made.serial, made.replace) == (
        None,
        "web1",
        "abc-1",
        "sn9",
        True,
    )
    open_token, _ = await identities.create_token(kind=TokenKind.AGENT, ttl=timedelta(hours=1))
    assert (open_token.hostname, open_token.system_uuid, open_token.serial) == (None, None, None)
    assert (open_token.description, open_token.created_by, open_token.roles) == ("", None, ())
    assert (open_token.reusable, open_token.max_uses, open_token.uses) == (False, None, 0)
    with pytest.raises(Invalid) as info:
        await identities.create_token(kind=TokenKind.AGENT, ttl=timedelta(hours=1), user="ann")
    assert (info.value.message, fields_of(info)) == (
        "agent tokens are not bound to a user",
        ["body.user"],
    )
    with pytest.raises(Invalid) as info:
        await identities.create_token(kind=TokenKind.AGENT, ttl=timedelta(hours=1), replace=True)
    assert fields_of(info) == ["body.replace"]
    assert info.value.message == "replace needs the hostname of the server to take over"
    for field, value in (("serial", ""), ("serial", "x" * 129), ("system_uuid", "a\x00b")):
        with pytest.raises(Invalid) as info:
            await identities.create_token(
                kind=TokenKind.AGENT, ttl=timedelta(hours=1), **{field: value}
            )
        assert info.value.message == f"{field} must be 1 to 128 printable characters"
        assert fields_of(info) == [f"body.{field}"]
    longest, _ = await identities.create_token(
        kind=TokenKind.AGENT, ttl=timedelta(hours=1), serial="x" * 128
    )
    assert longest.serial == "x" * 128


async def test_create_token_limits(identities: Identities) -> None:
    for ttl in (timedelta(0), timedelta(days=365, seconds=1)):
        with pytest.raises(Invalid) as info:
            await identities.create_token(kind=TokenKind.AGENT, ttl=ttl)
        assert fields_of(info) == ["body.ttl_seconds"]
        assert info.value.message == "ttl must be between 1 second and 365 days"
    longest, _ = await identities.create_token(kind=TokenKind.AGENT, ttl=timedelta(days=365))
    assert longest.expires_at == T0 + timedelta(days=365)
    shortest, _ = await identities.create_token(kind=TokenKind.AGENT, ttl=timedelta(seconds=1))
    assert shortest.expires_at == T0 + timedelta(seconds=1)
    for reusable, max_uses in ((False, 2), (True, 0)):
        with pytest.raises(Invalid) as info:
            await identities.create_token(
                kind=TokenKind.AGENT, ttl=timedelta(hours=1), reusable=reusable, max_uses=max_uses
            )
        assert fields_of(info) == ["body.max_uses"]
        assert info.value.message == "max_uses needs a reusable token and must be at least 1"
    capped, _ = await identities.create_token(
        kind=TokenKind.AGENT, ttl=timedelta(hours=1), reusable=True, max_uses=1
    )
    assert (capped.reusable, capped.max_uses) == (True, 1)
    with pytest.raises(Invalid) as info:
        await identities.create_token(kind=TokenKind.AGENT, ttl=timedelta(hours=1), roles=["x"])
    assert fields_of(info) == ["body.roles"]
    assert info.value.message == "agent tokens carry no roles"
    with pytest.raises(Invalid) as info:
        await identities.create_token(
            kind=TokenKind.USER, ttl=timedelta(hours=1), user="ann", roles=["nope"]
        )
    assert info.value.message == "unknown role 'nope'"
    assert fields_of(info) == ["body.roles"]
    made, secret = await identities.create_token(
        kind=TokenKind.USER,
        ttl=timedelta(hours=1),
        user="ann",
        roles=["viewer"],
        description="for ann",
        created_by="user/admin",
    )
    stored = await identities.store.tokens.get(made.id)
    assert stored == made
    assert (stored.roles, stored.description, stored.created_by) == (
        ("viewer",),
        "for ann",
        "user/admin",
    )
    assert secret.startswith(f"{made.id}.") and secret_matches(
        secret.split(".", 1)[1], made.secret_hash
    )


def test_check_agent_binding() -> None:
    bound = token(hostname="web1", system_uuid="abc", serial="sn9")
    check_agent_binding(bound, "web1", {"system_uuid": " ABC ", "serial": "SN9"})
    with pytest.raises(PermissionDenied) as info:
        check_agent_binding(bound, "web2", {"system_uuid": "abc", "serial": "sn9"})
    assert info.value.message == "this token was made for server/web1"
    assert info.value.details == {"reason": "token_host_mismatch"}
    for facts, field in (
        ({"system_uuid": "abd", "serial": "sn9"}, "system_uuid"),
        ({"system_uuid": "abc"}, "serial"),
        ({"system_uuid": 7, "serial": "sn9"}, "system_uuid"),
    ):
        with pytest.raises(PermissionDenied) as info:
            check_agent_binding(bound, "web1", facts)
        assert info.value.message == (
            f"this token is bound to another machine ({field} does not match)"
        )
        assert info.value.details == {"reason": "token_hardware_mismatch", "field": field}
    check_agent_binding(token(), "any", {})
    check_agent_binding(token(serial="sn9"), "any", {"serial": "sn9"})


def test_bound_username() -> None:
    assert bound_username(token(user="ann"), None) == "ann"
    assert bound_username(token(user="ann"), "ann") == "ann"
    with pytest.raises(PermissionDenied) as info:
        bound_username(token(user="ann"), "bob")
    assert info.value.details == {"reason": "token_user_mismatch"}
    assert info.value.message == "this token was made for another user"
    assert bound_username(token(), None) == "admin"
    assert bound_username(token(), "root") == "root"
    with pytest.raises(Invalid):
        bound_username(token(), "Root")


def test_token_binding_and_trace_name_only_what_is_set() -> None:
    assert token_binding(token()) == {}
    full = token(user="ann", hostname="web1", system_uuid="u", serial="s", replace=True)
    assert token_binding(full) == {
        "user": "ann",
        "hostname": "web1",
        "system_uuid": "u",
        "serial": "s",
        "replace": True,
    }
    assert token_trace(token(created_by="user/admin", hostname="web1")) == {
        "token_id": "t1",
        "token_created_by": "user/admin",
        "binding": {"hostname": "web1"},
    }


# --- when a token may be used ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "at", "ok"),
    [
        ({}, T0, True),
        ({"uses": 1}, T0, False),
        ({"expires_at": T0}, T0, False),
        ({"expires_at": T0 + timedelta(microseconds=1)}, T0, True),
        ({"revoked_at": T0 - timedelta(days=1)}, T0, False),
        ({"reusable": True, "uses": 9}, T0, True),
        ({"reusable": True, "max_uses": 2, "uses": 1}, T0, True),
        ({"reusable": True, "max_uses": 2, "uses": 2}, T0, False),
        ({"reusable": True, "max_uses": 2, "expires_at": T0}, T0, False),
    ],
)
def test_usable(fields: dict[str, Any], at: datetime, ok: bool) -> None:
    assert usable(token(**fields), at) is ok


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (None, "unknown"),
        (token(revoked_at=T0, expires_at=T0), "revoked"),
        (token(expires_at=T0), "expired"),
        (token(expires_at=T0 - timedelta(seconds=1)), "expired"),
        (token(expires_at=T0 + timedelta(microseconds=1), uses=1), "used"),
    ],
)
def test_token_refusal_reasons(record: JoinToken | None, why: str) -> None:
    error = token_refusal(record, T0)
    assert error.message == f"join token cannot be used ({why})"
    assert error.details == {"reason": why}


def test_before_use() -> None:
    used = token(uses=3, created_at=T0)
    assert before_use(used) == attrs.evolve(used, uses=2)


# --- check and redeem on a real store -------------------------------------------------------


@pytest.fixture
async def identities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Identities]:
    monkeypatch.setattr(identity, "now", lambda: T0)
    store: Store
    async with open_store(f"sqlite:///{tmp_path / 'lab.db'}") as store:
        ca = CAService(store=store, passphrase=b"unused: tokens sign nothing")
        yield Identities(store=store, ca=ca, revocations=Revocations(store))


async def test_redeem_counts_one_use_of_a_one_time_token(identities: Identities) -> None:
    made, secret = await identities.create_token(
        kind=TokenKind.USER, ttl=timedelta(hours=1), user="ann", roles=["viewer"]
    )
    record = await identities.redeem(secret, TokenKind.USER, role="viewer")
    assert record == attrs.evolve(made, uses=0)
    assert (await identities.store.tokens.get(made.id)).uses == 1
    with pytest.raises(Unauthenticated) as info:
        await identities.redeem(secret, TokenKind.USER)
    assert reason(info) == "used"


async def test_refusals_use_nothing(identities: Identities) -> None:
    made, secret = await identities.create_token(
        kind=TokenKind.USER, ttl=timedelta(hours=1), user="ann", roles=["viewer"]
    )
    token_id, real = secret.split(".", 1)
    wrong = f"{token_id}.{'A' if real[0] != 'A' else 'B'}{real[1:]}"
    cases: list[tuple[str, TokenKind, str | None, type[Exception], str]] = [
        (wrong, TokenKind.USER, None, Unauthenticated, "unknown"),
        (f"nosuchid.{real}", TokenKind.USER, None, Unauthenticated, "unknown"),
        ("malformed", TokenKind.USER, None, Unauthenticated, "malformed"),
        (secret, TokenKind.AGENT, None, PermissionDenied, "wrong_kind"),
        (secret, TokenKind.USER, "operator", PermissionDenied, "wrong_role"),
    ]
    for text, kind, role, error, why in cases:
        with pytest.raises(error) as info:
            await identities.redeem(text, kind, role=role)
        assert reason(info) == why, text
        if why == "unknown":
            assert str(info.value) == "unknown join token"
    assert (await identities.store.tokens.get(made.id)).uses == 0
    with pytest.raises(PermissionDenied) as denied:
        await identities.check_token(secret, TokenKind.AGENT)
    assert denied.value.message == "a user token cannot enroll a agent"
    with pytest.raises(PermissionDenied) as denied:
        await identities.check_token(secret, TokenKind.USER, role="operator")
    assert denied.value.message == "this token does not carry the operator role"
    assert (await identities.check_token(secret, TokenKind.USER)).uses == 0
    assert (await identities.store.tokens.get(made.id)).uses == 0


async def test_check_token_refuses_an_expired_or_revoked_token(
    identities: Identities, monkeypatch: pytest.MonkeyPatch
) -> None:
    made, secret = await identities.create_token(kind=TokenKind.AGENT, ttl=timedelta(seconds=1))
    monkeypatch.setattr(identity, "now", lambda: T0 + timedelta(seconds=1))
    with pytest.raises(Unauthenticated) as info:
        await identities.check_token(secret, TokenKind.AGENT)
    assert reason(info) == "expired"
    monkeypatch.setattr(identity, "now", lambda: T0)
    await identities.store.tokens.revoke(made.id, at=T0)
    with pytest.raises(Unauthenticated) as info:
        await identities.check_token(secret, TokenKind.AGENT)
    assert reason(info) == "revoked"


async def test_a_reusable_token_until_max_uses(identities: Identities) -> None:
    made, secret = await identities.create_token(
        kind=TokenKind.AGENT, ttl=timedelta(hours=1), reusable=True, max_uses=2
    )
    assert [(await identities.redeem(secret, TokenKind.AGENT)).uses for _ in range(2)] == [0, 1]
    with pytest.raises(Unauthenticated) as info:
        await identities.redeem(secret, TokenKind.AGENT)
    assert reason(info) == "used"
    assert (await identities.store.tokens.get(made.id)).uses == 2
