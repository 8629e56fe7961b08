"""The bastion's link to labd: joining once, then one-time agent tokens and enrollment checks.

``lab-bastion join`` trades a one-time admin user join token for a ``bastion/<name>``
certificate and stores, in ``<data dir>/labd/``, ``key.pem`` (0600), ``cert.pem``, ``ca.pem``
and ``labd.yaml`` (labd's URL, the bastion's name, the CA fingerprint). While serving,
:func:`open_labd_link` turns that into a :class:`LabdTokenSource`: one mTLS connection pool to
labd that creates (and revokes) a bound one-time agent token per install, tells the phase
watchdog whether an installed machine's agent is already online, and renews the bastion's
certificate at 2/3 of its life (a new client then presents the new one).
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio
import yaml
from attrs import frozen

from lab.bastion.jointokens import AgentToken, TokenBinding
from lab.client.api import LabClient, enroll_identity, renew_in_place
from lab.client.credentials import load_credentials, write_atomic
from lab.errors import ConfigError, NotFound, Unavailable
from lab.runtime.renewal import keep_renewed

if TYPE_CHECKING:
    from lab.pki import CACert, CertInfo

log = logging.getLogger("lab.bastion.labd")

LINK_DIR = "labd"
LINK_FILE = "labd.yaml"
JOIN_HINT = "run `lab-bastion join --server URL --token TOKEN`"


@frozen(kw_only=True)
class LabdLink:
    """What ``labd.yaml`` records: where labd is and who this bastion is to it."""

    server: str
    name: str
    ca_fingerprint: str
    directory: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "name": self.name,
            "ca_fingerprint": self.ca_fingerprint,
            "directory": str(self.directory),
        }


def link_dir(data_dir: Path) -> Path:
    return data_dir / LINK_DIR


def load_link(data_dir: Path) -> LabdLink | None:
    """The stored link, or None when this bastion never joined; ConfigError when unreadable."""
    directory = link_dir(data_dir)
    path = directory / LINK_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}", details={"hint": JOIN_HINT}) from exc
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("server", "name")
    ):
        raise ConfigError(f"{path} has no labd server or name", details={"hint": JOIN_HINT})
    return LabdLink(
        server=data["server"],
        name=data["name"],
        ca_fingerprint=str(data.get("ca_fingerprint", "")),
        directory=directory,
    )


async def join(
    data_dir: Path,
    server: str,
    token: str,
    *,
    name: str,
    ca_fingerprint: str | None,
    tofu: bool,
    request_timeout: float = 30.0,
) -> LabdLink:
    """Join labd as ``bastion/<name>``; the whole of ``lab-bastion join``.

    labd's CA must have ``ca_fingerprint`` unless ``tofu``. ``token`` is a one-time user join
    token bound to ``name`` and carrying the admin role (``labctl tokens create --kind user
    --user NAME --roles admin``). Files are written only after labd accepted the token, so a
    failed attempt keeps an earlier link.

    Raises :class:`Unauthenticated` (CA not trusted, token refused), :class:`PermissionDenied`
    (the token lacks the admin role), :class:`Invalid` (URL, fingerprint, name),
    :class:`RateLimited`, :class:`Unavailable`. Cancellation abandons the request.
    """

    directory = link_dir(data_dir)
    enrolled = await enroll_identity(
        server,
        token,
        route="/api/auth/bastion-enroll",
        subject=f"bastion/{name}",
        fields={"name": name},
        directory=directory,
        ca_fingerprint=ca_fingerprint,
        tofu=tofu,
        auth_hint=(
            "ask an admin for a token: labctl tokens create --kind user --user NAME --roles admin"
        ),
        request_timeout=request_timeout,
    )
    link = LabdLink(
        server=enrolled.server,
        name=str(enrolled.body.get("bastion") or name),
        ca_fingerprint=enrolled.ca_fingerprint,
        directory=directory,
    )
    record = {**link.as_dict(), "joined_at": datetime.now(UTC).isoformat()}
    record.pop("directory")
    text = yaml.safe_dump(record, sort_keys=True).encode("utf-8")
    write_atomic(directory / LINK_FILE, text, mode=0o600)
    return link


class LabdTokenSource:
    """One-time bound agent tokens from labd (and their revocation), and whether an agent is
    online, over mTLS.

    Satisfies :class:`lab.bastion.service.JoinTokenSource` and
    :class:`lab.bastion.service.EnrollmentCheck`. Build it with :func:`open_labd_link`.
    """

    def __init__(self, link: LabdLink, stack: AsyncExitStack, request_timeout: float) -> None:
        self.link = link
        self.name = link.name
        self._stack = stack
        self._request_timeout = request_timeout
        self._client: LabClient | None = None
        self._renewed = trio.Event()
        self._trusted: list[CACert] = []
        self._server_context: ssl.SSLContext | None = None

    async def connect(self) -> None:
        """(Re)open the mTLS client from the files in the link directory.

        After a renewal the new client presents the new certificate on every new connection;
        the previous client's idle connections are left to close with the link (requests in
        flight on them finish).
        """
        from lab import pki

        creds = load_credentials(self.link.directory, hint=JOIN_HINT)
        ctx = pki.client_ssl_context(creds.ca_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
        self._trusted = pki.load_ca_bundle(creds.ca_pem)
        if self._server_context is not None:
            # New connections to the operator listener see the renewed certificate; a CA
            # added by a rotation is trusted for client certificates from now on.
            pki.load_cert_chain(self._server_context, creds.cert_pem, creds.key_pem)
            self._server_context.load_verify_locations(cadata=creds.ca_pem.decode("ascii"))
        client = LabClient(
            self.link.server, ssl_context=ctx, timeout=self._request_timeout, auth_hint=JOIN_HINT
        )
        self._client = await self._stack.enter_async_context(client)

    def trusted_cas(self) -> list[CACert]:
        """labd's CA bundle as last read (client certificates of operators chain to it)."""
        return self._trusted

    def server_ssl_context(self) -> ssl.SSLContext:
        """The operator listener's TLS context: this bastion's certificate, labd's CAs for
        the (optional) client certificates; reloaded in place on renewal."""
        from lab import pki

        if self._server_context is None:
            creds = load_credentials(self.link.directory, hint=JOIN_HINT)
            self._server_context = pki.server_ssl_context(
                creds.cert_pem, creds.key_pem, creds.ca_pem, client_auth="optional"
            )
        return self._server_context

    async def check_user(
        self, user: str, serial: str, action: str, resource: str
    ) -> tuple[bool, str]:
        """labd's answer (allowed, reason) for a user the operator listener authenticated.

        Raises :class:`Unavailable` when labd cannot be asked (the request is then refused).
        """
        body = await self.client.post(
            "/api/auth/check",
            {"user": user, "serial": serial, "action": action, "resource": resource},
        )
        if not isinstance(body, dict) or not isinstance(body.get("allowed"), bool):
            raise Unavailable("labd's answer to POST /api/auth/check has no decision")
        return body["allowed"], str(body.get("reason", ""))

    @property
    def client(self) -> LabClient:
        if self._client is None:
            raise RuntimeError("connect() has not run")
        return self._client

    # --- certificate renewal ------------------------------------------------------------

    async def renew(self) -> CertInfo:
        """Renew ``bastion/<name>``'s certificate now (``POST /api/auth/renew``, same key).

        ``cert.pem`` and ``ca.pem`` (labd's current bundle, so a CA rotation is picked up) are
        replaced atomically, then the client is reopened with them. Raises
        :class:`Unauthenticated` (the certificate expired or was revoked: join again) and
        :class:`Unavailable` (labd unreachable); the files are then as they were.
        """
        from lab import pki

        await renew_in_place(
            self.link.directory, self.link.server, request_timeout=self._request_timeout
        )
        await self.connect()
        info = pki.cert_info((self.link.directory / "cert.pem").read_bytes())
        self._renewed.set()
        self._renewed = trio.Event()
        return info

    def certificate(self) -> CertInfo:
        from lab import pki

        return pki.cert_info((self.link.directory / "cert.pem").read_bytes())

    async def run_renewal(self, rng: random.Random | None = None) -> None:
        """Renew at ⅔ of the certificate's life (with jitter) until cancelled.

        A failure is logged and retried with backoff (30 s doubling to an hour); the bastion
        keeps serving with the certificate it has meanwhile.
        """
        await keep_renewed(
            self._validity,
            self._renew_logged,
            rng=rng or random.Random(),
            log=log,
            what=f"bastion/{self.name}",
        )

    def _validity(self) -> tuple[datetime, datetime]:
        cert = self.certificate()
        return cert.not_before, cert.not_after

    async def _renew_logged(self) -> None:
        renewed = await self.renew()
        log.info(
            "certificate of bastion/%s renewed, valid until %s",
            self.name,
            renewed.not_after.isoformat(),
        )

    async def run_witness(
        self,
        interval: float,
        rng: random.Random | None = None,
        *,
        stored: Callable[[], None] | None = None,
    ) -> None:
        """Keep labd's newest signed audit checkpoint in the link directory (a witness, see
        lab.runtime.witness) every ``interval`` seconds until cancelled; 0 does nothing.
        ``stored`` is called after each checkpoint kept."""
        from lab.runtime.witness import run_witness

        if interval <= 0:
            return

        async def fetch() -> Any:
            return await self.client.get("/api/audit/witness")

        await run_witness(
            interval, self.link.directory, fetch, rng=rng or random.Random(), stored=stored
        )

    async def wait_renewed(self) -> None:
        """Wait for the next renewal (tests synchronise on it)."""
        await self._renewed.wait()

    async def create_agent_token(self, binding: TokenBinding, ttl: timedelta) -> AgentToken:
        """A one-time agent token bound to ``binding``, living ``ttl`` (labd allows 24 h).

        Raises :class:`PermissionDenied` (labd refused: ttl too long, ``replace`` of a server
        it does not know, certificate revoked) and :class:`Unavailable` (labd unreachable);
        the install script is then not served.
        """
        request: dict[str, Any] = {
            "kind": "agent",
            "ttl_seconds": max(1, int(ttl.total_seconds())),
            "description": f"install of {binding.hostname} by bastion/{self.name}",
            "hostname": binding.hostname,
        }
        if binding.system_uuid is not None:
            request["system_uuid"] = binding.system_uuid
        if binding.serial is not None:
            request["serial"] = binding.serial
        if binding.replace:
            request["replace"] = True
        body = await self.client.post("/api/tokens", request)
        token = body.get("token") if isinstance(body, dict) else None
        token_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(token, str) or not isinstance(token_id, str):
            raise Unavailable("labd's answer to POST /api/tokens has no token and id")
        return AgentToken(token=token, id=token_id)

    async def revoke_agent_token(self, token_id: str) -> None:
        """Revoke a token this bastion created (``DELETE /api/tokens/{id}``).

        A token labd no longer knows counts as revoked; raises :class:`Unavailable` when labd
        cannot be reached and :class:`PermissionDenied` when it refuses.
        """
        try:
            await self.client.delete(f"/api/tokens/{quote(token_id, safe='')}")
        except NotFound:
            return

    async def agent_online(self, hostname: str) -> bool:
        """Whether labd knows ``server/<hostname>`` and its agent is connected.

        False when labd does not know the server; raises :class:`Unavailable` when labd cannot
        be asked (the caller decides what an unknown answer means).
        """
        try:
            body = await self.client.get(f"/api/servers/{hostname}")
        except NotFound:
            return False
        return isinstance(body, dict) and body.get("status") == "online"


@asynccontextmanager
async def open_labd_link(
    link: LabdLink, *, request_timeout: float = 10.0
) -> AsyncIterator[LabdTokenSource]:
    """An mTLS client to the joined labd for the duration of the block.

    Raises :class:`Unauthenticated` (files missing: join again) and :class:`ConfigError` (key
    readable by others, unusable material) before yielding. Run
    :meth:`LabdTokenSource.run_renewal` inside the block to keep the certificate fresh.
    """
    async with AsyncExitStack() as stack:
        source = LabdTokenSource(link, stack, request_timeout)
        await source.connect()
        yield source
