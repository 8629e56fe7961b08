"""Join tokens, enrollment of agents and users, renewal, revocation and the bootstrap token.

No HTTP here: routes validate the body, call these methods and shape the answer.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
from attrs import define, field

from lab import pki
from lab.errors import Invalid, NotFound, PermissionDenied, Unauthenticated
from lab.labd.audit.entries import annotate
from lab.labd.identity.ca import CAService
from lab.labd.identity.rolecache import RoleCache
from lab.labd.identity.secrets import new_token, secret_matches, split_token
from lab.model import AgentEnrollment, Certificate, JoinToken, Role, TokenKind, User
from lab.store import Store, server_exists, token_refusal

log = logging.getLogger(__name__)

MAX_TOKEN_TTL = timedelta(days=365)
BOOTSTRAP_FILE = "bootstrap-token"
BOOTSTRAP_DONE = "bootstrap.created_at"
BOOTSTRAP_USER = "admin"
"""The user the bootstrap token creates when the login names none."""
# RFC 1123 host name label(s); server names become certificate subjects and template values.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*"
)
_USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,63}")

RevocationListener = Callable[[Certificate], None]
Note = Callable[..., None]


def _ignore(**_: Any) -> None:
    return None


def now() -> datetime:
    return datetime.now(UTC)


def check_hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise Invalid(
            "hostname is not a valid RFC 1123 name", details={"fields": ["body.hostname"]}
        )
    return value.lower()


def check_username(value: str) -> str:
    if not _USERNAME.fullmatch(value):
        raise Invalid(
            "username must be lowercase letters, digits, '_', '.', '-' (max 64)",
            details={"fields": ["body.username"]},
        )
    return value


def _hardware_id(value: str | None, field: str) -> str | None:
    """A DMI value as the agent reports it: trimmed, case-folded, at most 128 printable chars."""
    if value is None:
        return None
    value = value.strip().lower()
    if not value or len(value) > 128 or not value.isprintable():
        raise Invalid(
            f"{field} must be 1 to 128 printable characters", details={"fields": [f"body.{field}"]}
        )
    return value


def _bindings(
    kind: TokenKind,
    user: str | None,
    hostname: str | None,
    system_uuid: str | None,
    serial: str | None,
    *,
    replace: bool,
    bind_user: bool,
) -> tuple[str | None, str | None, str | None, str | None]:
    """Check a new token's bindings against its kind; returns them normalised."""
    if kind == TokenKind.USER:
        agent_only = [
            f
            for f, v in (
                ("hostname", hostname),
                ("system_uuid", system_uuid),
                ("serial", serial),
                ("replace", replace or None),
            )
            if v is not None
        ]
        if agent_only:
            raise Invalid(
                "user tokens take no host binding",
                details={"fields": [f"body.{f}" for f in agent_only]},
            )
        if user is None:
            if bind_user:
                raise Invalid(
                    "a user token is created for one user: give user",
                    details={"fields": ["body.user"]},
                )
            return None, None, None, None
        try:
            return check_username(user), None, None, None
        except Invalid:
            raise Invalid(
                "user must be lowercase letters, digits, '_', '.', '-' (max 64)",
                details={"fields": ["body.user"]},
            ) from None
    if user is not None:
        raise Invalid("agent tokens are not bound to a user", details={"fields": ["body.user"]})
    if replace and hostname is None:
        raise Invalid(
            "replace needs the hostname of the server to take over",
            details={"fields": ["body.replace"]},
        )
    return (
        None,
        None if hostname is None else check_hostname(hostname),
        _hardware_id(system_uuid, "system_uuid"),
        _hardware_id(serial, "serial"),
    )


def usable(record: JoinToken, at: datetime) -> bool:
    """Whether the token may still be used at ``at`` (the store's consume has the last word)."""
    if record.revoked_at is not None or record.expires_at <= at:
        return False
    if not record.reusable:
        return record.uses == 0
    return record.max_uses is None or record.uses < record.max_uses


def token_binding(record: JoinToken) -> dict[str, Any]:
    """What a token is bound to, for audit entries and ``describe``: only the set bindings."""
    binding: dict[str, Any] = {
        k: v
        for k, v in (
            ("user", record.user),
            ("hostname", record.hostname),
            ("system_uuid", record.system_uuid),
            ("serial", record.serial),
        )
        if v is not None
    }
    if record.replace:
        binding["replace"] = True
    return binding


def token_trace(record: JoinToken) -> dict[str, Any]:
    """The token id, its creator and its binding (never the secret)."""
    return {
        "token_id": record.id,
        "token_created_by": record.created_by,
        "binding": token_binding(record),
    }


def check_agent_binding(record: JoinToken, name: str, facts: dict[str, Any]) -> None:
    """PermissionDenied unless ``name`` and the reported hardware match the token's binding."""
    if record.hostname is not None and record.hostname != name:
        raise PermissionDenied(
            f"this token was made for server/{record.hostname}",
            details={"reason": "token_host_mismatch"},
        )
    for key in ("system_uuid", "serial"):
        bound = getattr(record, key)
        reported = facts.get(key)
        seen = reported.strip().lower() if isinstance(reported, str) else None
        if bound is not None and seen != bound:
            raise PermissionDenied(
                f"this token is bound to another machine ({key} does not match)",
                details={"reason": "token_hardware_mismatch", "field": key},
            )


def bound_username(record: JoinToken, username: str | None) -> str:
    """The user name a user token enrolls: its bound user; ``username`` must match it."""
    if record.user is None:
        # labd's bootstrap token: it creates the first admin, named as asked or "admin".
        return check_username(username or BOOTSTRAP_USER)
    if username is not None and username != record.user:
        raise PermissionDenied(
            "this token was made for another user",
            details={"reason": "token_user_mismatch"},
        )
    return record.user


def judge_token(
    record: JoinToken | None, secret: str, kind: TokenKind, *, role: str | None = None
) -> JoinToken:
    """``record`` if ``secret`` is its secret and it is of ``kind``; uses nothing.

    Unauthenticated (401, reason ``unknown``) for no record or a wrong secret; PermissionDenied
    (403, ``wrong_kind`` / ``wrong_role``) otherwise; Unauthenticated (``expired``, ``revoked``,
    ``used``) for a token that can no longer be used, which the consuming write decides again
    atomically.
    """
    if record is None or not secret_matches(secret, record.secret_hash):
        raise Unauthenticated("unknown join token", details={"reason": "unknown"})
    if record.kind != kind:
        raise PermissionDenied(
            f"a {record.kind} token cannot enroll a {kind}", details={"reason": "wrong_kind"}
        )
    if role is not None and role not in record.roles:
        raise PermissionDenied(
            f"this token does not carry the {role} role", details={"reason": "wrong_role"}
        )
    at = now()
    if not usable(record, at):
        # Said before any binding is checked; the consuming write decides again atomically.
        raise token_refusal(record, at)
    return record


@define
class Revocations:
    """Revoked serials, kept in memory for the per-request check; listeners close sessions."""

    store: Store
    _serials: set[str] = field(factory=set)
    _listeners: list[RevocationListener] = field(factory=list)

    async def load(self) -> None:
        self._serials = {c.serial for c in await self.store.certificates.revoked()}

    async def is_revoked(self, serial: str) -> bool:
        return serial in self._serials

    def subscribe(self, listener: RevocationListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def revoke(self, serial: str) -> Certificate:
        cert = await self.store.certificates.revoke(serial, at=now())
        self._serials.add(serial)
        for listener in list(self._listeners):
            listener(cert)
        # Other replicas poll this counter and reload (cluster mode, lab.labd.cluster).
        await self.store.replicas.bump_changes()
        return cert

    async def revoked_elsewhere(self, certs: list[Certificate]) -> None:
        """Certificates the store already marked revoked (an enrollment took their server
        over): remember them, close their sessions, tell other replicas."""
        for cert in certs:
            self._serials.add(cert.serial)
            for listener in list(self._listeners):
                listener(cert)
        await self.store.replicas.bump_changes()

    async def reload(self) -> list[Certificate]:
        """Re-read the revoked serials (another replica may have revoked some); listeners hear
        about each newly revoked certificate. Returns those."""
        revoked = await self.store.certificates.revoked()
        new = [c for c in revoked if c.serial not in self._serials]
        self._serials = {c.serial for c in revoked}
        for cert in new:
            for listener in list(self._listeners):
                listener(cert)
        return new


@define
class Identities:
    store: Store
    ca: CAService
    revocations: Revocations
    # The per-request roles of the Kubernetes proxy; see lab.labd.identity.rolecache for how
    # changes empty it.
    role_cache: RoleCache = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.role_cache = RoleCache(self.user_roles)

    # -- tokens ----------------------------------------------------------------------------

    async def create_token(
        self,
        *,
        kind: TokenKind,
        roles: Sequence[str] = (),
        ttl: timedelta,
        reusable: bool = False,
        max_uses: int | None = None,
        description: str = "",
        created_by: str | None = None,
        user: str | None = None,
        hostname: str | None = None,
        system_uuid: str | None = None,
        serial: str | None = None,
        replace: bool = False,
        bind_user: bool = True,
    ) -> tuple[JoinToken, str]:
        """Create a token; returns the record and the secret string (shown once, never stored).

        A user token names its user (``bind_user=False`` only for labd's own bootstrap token,
        which may create one *new* user of any name); an agent token may name a hostname and
        hardware, and ``replace`` (which needs the hostname) lets it take over that server.
        Raises Invalid naming the body field.
        """
        if ttl <= timedelta(0) or ttl > MAX_TOKEN_TTL:
            raise Invalid(
                "ttl must be between 1 second and 365 days",
                details={"fields": ["body.ttl_seconds"]},
            )
        if max_uses is not None and (max_uses < 1 or not reusable):
            raise Invalid(
                "max_uses needs a reusable token and must be at least 1",
                details={"fields": ["body.max_uses"]},
            )
        if kind == TokenKind.AGENT and roles:
            raise Invalid("agent tokens carry no roles", details={"fields": ["body.roles"]})
        user, hostname, system_uuid, serial = _bindings(
            kind, user, hostname, system_uuid, serial, replace=replace, bind_user=bind_user
        )
        for role in roles:
            try:
                await self.store.roles.get(role)
            except NotFound:
                raise Invalid(
                    f"unknown role {role!r}", details={"fields": ["body.roles"]}
                ) from None
        token_id, secret, hashed = new_token()
        record = JoinToken(
            id=token_id,
            kind=kind,
            secret_hash=hashed,
            roles=tuple(roles),
            reusable=reusable,
            max_uses=max_uses,
            expires_at=now() + ttl,
            created_by=created_by,
            description=description,
            user=user,
            hostname=hostname,
            system_uuid=system_uuid,
            serial=serial,
            replace=replace,
        )
        # Named in the request's audit entry, which commits with this row.
        annotate(token_id=token_id)
        return await self.store.tokens.create(record), secret

    async def check_token(
        self, token: str, kind: TokenKind, *, role: str | None = None
    ) -> JoinToken:
        """The token record if the secret matches and it is of ``kind``; uses nothing.

        Unauthenticated (401, reason ``unknown``) for a wrong secret; PermissionDenied (403,
        ``wrong_kind`` / ``wrong_role``) otherwise; Unauthenticated (``expired``, ``revoked``,
        ``used``) for a token that can no longer be used, which :meth:`consume` decides again
        atomically.
        """
        token_id, secret = split_token(token)
        try:
            record = await self.store.tokens.get(token_id)
        except NotFound:
            record = None
        return judge_token(record, secret, kind, role=role)

    async def consume(self, record: JoinToken) -> JoinToken:
        """Count one use of a checked token (Unauthenticated: expired, revoked, used)."""
        return await self.store.tokens.consume(record.id, at=now())

    async def redeem(self, token: str, kind: TokenKind, *, role: str | None = None) -> JoinToken:
        """Check the secret and count one use; Unauthenticated (401) with a reason otherwise.

        With ``role``, the token must also carry that role (PermissionDenied, 403, otherwise);
        a refused token is not used up.
        """
        return await self.consume(await self.check_token(token, kind, role=role))

    # -- enrollment --------------------------------------------------------------------------

    async def enroll_agent(
        self,
        *,
        token: str,
        csr: str,
        hostname: str,
        facts: dict[str, Any],
        note: Note = _ignore,
    ) -> dict[str, Any]:
        """Enroll ``server/<hostname>`` with an agent token, within what the token is bound to.

        The token's hostname and hardware (``system_uuid``, ``serial`` in ``facts``) must match
        (PermissionDenied ``token_host_mismatch`` / ``token_hardware_mismatch``). An existing
        server name is refused (Conflict ``server_exists``) unless the token was minted for it
        with ``replace``; then its old certificates are revoked in the same transaction as the
        new one is recorded. A refused enrollment leaves the token unused. ``note`` hears the
        details the audit entry should carry (token id, creator, binding, mode).
        """
        name = check_hostname(hostname)
        vetted = pki.parse_csr(csr.encode())  # a bad CSR is a 400 and must not use up the token
        token_id, secret = split_token(token)
        # One read for both checks made before signing (the transaction makes them again).
        found, exists = await self.store.agents.enrollment_check(token_id, name)
        record = judge_token(found, secret, TokenKind.AGENT)
        note(**token_trace(record))
        check_agent_binding(record, name, facts)
        if exists and not record.replace:
            raise server_exists(name)  # checked again in the transaction; this saves a signature
        cert_pem, issued = pki.issue_agent_cert(self.ca.signer, vetted, name)
        # Before the write, so the audit entry commits with the enrollment: the certificates
        # the transaction will revoke are the server's valid ones now (a race shows up below).
        valid = (
            sorted(
                c.serial
                for c in await self.store.certificates.list(subject=f"server/{name}")
                if c.revoked_at is None
            )
            if exists
            else []
        )
        note(mode="replace" if exists else "new", serial=issued.serial, replaced_serials=valid)
        at = now()
        done = await self.store.agents.enroll(
            AgentEnrollment(
                token_id=record.id,
                at=at,
                name=name,
                facts=facts,
                replace=record.replace,
                cert=issued.to_record(),
                agent_version=str(facts.get("agent_version", "")),
                trace={**token_trace(record), "enrolled_at": at.isoformat()},
            )
        )
        mode = "replace" if done.replaced else "new"
        replaced = [c.serial for c in done.revoked]
        note(mode=mode, replaced_serials=replaced)  # unchanged unless the race above happened
        if done.revoked:
            await self.revocations.revoked_elsewhere(list(done.revoked))
        log.info(
            "enrolled agent server/%s (serial %s, token %s, %s%s)",
            name,
            issued.serial,
            record.id,
            mode,
            f", revoked {', '.join(replaced)}" if replaced else "",
        )
        return {
            "certificate": cert_pem.decode(),
            "ca_bundle": self.ca.bundle_pem().decode(),
            "server_id": done.server.id,
            "server_name": done.server.name,
            "ca_fingerprint": self.ca.fingerprint(),
        }

    async def enroll_user(
        self, *, token: str, csr: str, username: str | None = None, note: Note = _ignore
    ) -> dict[str, Any]:
        """Enroll the user a token was made for; ``username``, when given, must be that user.

        A token bound to a user enrolls exactly that name; labd's bootstrap token (bound to
        none) only creates a *new* user. The token's roles are granted only to a user it
        creates: an existing user keeps its roles (granting is ``users grant``). Any refusal
        (PermissionDenied ``token_user_mismatch``, ``user_exists``, ``disabled``) leaves the
        token unused.
        """
        vetted = pki.parse_csr(csr.encode())  # a bad CSR is a 400 and must not use up the token
        record = await self.check_token(token, TokenKind.USER)
        note(**token_trace(record))
        name = bound_username(record, username)
        try:
            user: User | None = await self.store.users.get_by_name(name)
        except NotFound:
            user = None
        if user is not None and record.user is None:
            raise PermissionDenied(
                f"this token only creates a new user; {name!r} exists",
                details={"reason": "user_exists"},
            )
        if user is not None and user.disabled:
            raise PermissionDenied(f"user {name!r} is disabled", details={"reason": "disabled"})
        # Before the first write: the audit entry commits with the enrollment.
        note(subject=f"user/{name}", mode="new" if user is None else "existing")
        record = await self.consume(record)
        if user is None:
            user = await self.store.users.create(User(name=name))
            for role in record.roles:
                await self.store.users.grant(user.id, role)
        cert_pem, issued = pki.issue_user_cert(self.ca.signer, vetted, name)
        await self.store.certificates.record(issued.to_record())
        log.info("enrolled user/%s (serial %s, token %s)", name, issued.serial, record.id)
        return {
            "certificate": cert_pem.decode(),
            "ca_bundle": self.ca.bundle_pem().decode(),
            "user": name,
            "roles": await self.store.users.roles_of(user.id),
            "ca_fingerprint": self.ca.fingerprint(),
            "token_id": record.id,
        }

    async def enroll_bastion(
        self, *, token: str, csr: str, name: str, note: Note = _ignore
    ) -> dict[str, Any]:
        """Trade a one-time admin user token and a CSR for a ``bastion/<name>`` certificate.

        The token must be bound to the bastion's name (``tokens create --kind user --user NAME
        --roles admin``).

        Join tokens have two kinds (agent, user) in both schemas, so a bastion is admitted by
        an admin's user token: whoever holds one could make themselves admin anyway, which a
        bastion certificate is far less than (see lab.labd.api.bastion for what it may do).
        """
        bastion = check_hostname(name)
        vetted = pki.parse_csr(csr.encode())
        record = await self.check_token(token, TokenKind.USER, role="admin")
        note(**token_trace(record))
        if record.user is not None and record.user != bastion:
            raise PermissionDenied(
                f"this token was made for {record.user!r}, not bastion {bastion!r}",
                details={"reason": "token_user_mismatch"},
            )
        await self.consume(record)
        cert_pem, issued = pki.issue_bastion_cert(self.ca.signer, vetted, bastion)
        await self.store.certificates.record(issued.to_record())
        log.info("enrolled bastion/%s (serial %s)", bastion, issued.serial)
        return {
            "certificate": cert_pem.decode(),
            "ca_bundle": self.ca.bundle_pem().decode(),
            "bastion": bastion,
            "ca_fingerprint": self.ca.fingerprint(),
        }

    async def renew(self, *, kind: str, name: str, csr: str) -> dict[str, Any]:
        """A new certificate for the same identity, signed by the current signer."""
        if kind == "server":
            cert_pem, issued = pki.issue_agent_cert(self.ca.signer, csr.encode(), name)
        elif kind == "user":
            cert_pem, issued = pki.issue_user_cert(self.ca.signer, csr.encode(), name)
        elif kind == "bastion":
            cert_pem, issued = pki.issue_bastion_cert(self.ca.signer, csr.encode(), name)
        else:
            raise PermissionDenied(f"{kind} certificates are not renewed here")
        await self.store.certificates.record(issued.to_record())
        if kind == "server":
            server = await self.store.servers.get_by_name(name)
            agent = await self.store.agents.get_by_server(server.id)
            await self.store.agents.upsert(attrs.evolve(agent, cert_serial=issued.serial))
        return {"certificate": cert_pem.decode(), "ca_bundle": self.ca.bundle_pem().decode()}

    # -- users and revocation --------------------------------------------------------------

    async def user_roles(self, name: str) -> tuple[Role, ...]:
        try:
            user = await self.store.users.get_by_name(name)
        except NotFound:
            raise Unauthenticated("unknown user", details={"reason": "unknown_user"}) from None
        if user.disabled:
            raise Unauthenticated("user is disabled", details={"reason": "disabled"})
        names = await self.store.users.roles_of(user.id)
        return tuple([await self.store.roles.get(n) for n in names])

    async def revoke_target(self, target: str) -> list[str]:
        """Revoke a serial, or every valid certificate of ``server/NAME`` / ``user/NAME``."""
        if "/" in target:
            certs = [
                c
                for c in await self.store.certificates.list(subject=target)
                if c.revoked_at is None
            ]
            if not certs:
                raise NotFound(f"no valid certificate for {target}")
        else:
            certs = [await self.store.certificates.get(target.lower())]
        for cert in certs:
            if cert.revoked_at is None:
                await self.revocations.revoke(cert.serial)
        return [c.serial for c in certs]

    async def pending_on_old_ca(self) -> list[str]:
        """Identities whose valid certificates all come from a CA other than the signer."""
        signer = self.ca.fingerprint()
        at = now()
        by_subject: dict[str, bool] = {}
        # labd's own server and replica certificates are issued afresh from the signer at every
        # start, so they never hold a rotation open.
        skip = ("server", "replica")
        for cert in await self.store.certificates.list():
            if cert.revoked_at is not None or cert.not_after < at or cert.profile in skip:
                continue
            on_new = cert.issuer_fingerprint == signer
            by_subject[cert.subject] = by_subject.get(cert.subject, False) or on_new
        return sorted(s for s, ok in by_subject.items() if not ok)

    # -- bootstrap -------------------------------------------------------------------------

    async def bootstrap(self, data_dir: Path) -> Path | None:
        """On the very first start, write a one-time admin user token (0600); else None."""
        if await self.store.settings.get(BOOTSTRAP_DONE) is not None:
            return None
        stamp = now().isoformat()
        if await self.store.settings.set_if_absent(BOOTSTRAP_DONE, stamp) != stamp:
            return None  # another replica got there first
        _, secret = await self.create_token(
            kind=TokenKind.USER,
            roles=["admin"],
            ttl=timedelta(days=7),
            description="bootstrap admin token",
            created_by="labd",
            bind_user=False,
        )
        path = data_dir / BOOTSTRAP_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        return path
