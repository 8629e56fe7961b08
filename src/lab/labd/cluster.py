"""Cluster mode: this labd replica's membership of the replica registry and what it polls.

Several labd replicas share one database (CockroachDB; PostgreSQL in tests). Each one

- registers itself in the ``replicas`` table as a lease (renewed every ``renew_interval``,
  dead after ``lease_seconds``) with the URL other replicas forward streams to;
- polls, every ``poll_interval``, the change counter that revocations, user disables and role
  changes bump (no LISTEN/NOTIFY: CockroachDB has none), and on a change reloads the revoked
  serials (closing affected live sessions through the ``Revocations`` listeners) and tells its
  ``on_change`` listeners to drop whatever they cache about identities;
- keeps a snapshot of which replica holds which agent (presence leases) and of the live
  replicas' URLs, which :class:`lab.labd.relay.forwarding.ForwardingHub` uses to route a stream to
  the replica holding the agent.

It also holds this replica's own ``replica/<id>`` certificate, issued at start from the shared
CA: the client certificate of replica-to-replica connections. While the replica runs it is
issued again at 2/3 of its life (with jitter), and labd's own server certificate with it, so a
replica that runs for months never presents an expired certificate.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from attrs import define, field

from lab import pki
from lab.errors import ConfigError, LabError
from lab.labd.relay.links import LinkPool
from lab.model import Replica
from lab.runtime.renewal import keep_renewed

if TYPE_CHECKING:
    from lab.labd.config import LabdConfig
    from lab.labd.identity.ca import CAService
    from lab.labd.identity.identities import Revocations
    from lab.store import Store

log = logging.getLogger("lab.labd.cluster")

RENEW_INTERVAL = 2.0  # seconds between renewals of this replica's lease
LEASE_SECONDS = 6.0  # a replica not renewed for this long is dead
POLL_INTERVAL = 1.0  # seconds between polls of the change counter and the presence snapshot
FULL_RELOAD_INTERVAL = 30.0  # reload the revoked set anyway, in case a bump was lost


def advertise_url(config: LabdConfig, host: str, port: int) -> str:
    """``LABD_ADVERTISE_URL``, else ``https://<host>:<port>`` of the bound listener.

    A listener on every address (0.0.0.0, ::) advertises the host name, which labd's server
    certificate carries. Raises ConfigError for a URL that is not ``https://HOST[:PORT]``.
    """
    if config.advertise_url:
        parts = urlsplit(config.advertise_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(
                f"advertise_url {config.advertise_url!r} must be https://HOST[:PORT]",
                details={"hint": "set LABD_ADVERTISE_URL to this replica's internal address"},
            )
        return config.advertise_url.rstrip("/")
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    return f"https://{shown}:{port}"


def advertised_names(config: LabdConfig) -> tuple[str, ...]:
    """The host of ``LABD_ADVERTISE_URL``, which labd's server certificate must name too."""
    host = urlsplit(config.advertise_url).hostname if config.advertise_url else None
    return (host,) if host else ()


def now() -> datetime:
    return datetime.now(UTC)


ChangeListener = Callable[[], None]


@define
class ClusterMember:
    """This replica in the registry; run :meth:`run` in labd's root nursery."""

    store: Store
    ca: CAService
    revocations: Revocations
    replica_id: str
    renew_interval: float = RENEW_INTERVAL
    lease_seconds: float = LEASE_SECONDS
    poll_interval: float = POLL_INTERVAL
    full_reload_interval: float = FULL_RELOAD_INTERVAL
    url: str = ""
    started_at: datetime = field(factory=now)
    # Snapshots refreshed every poll: server name -> holding replica, replica id -> URL.
    holders: dict[str, str] = field(factory=dict)
    peers: dict[str, str] = field(factory=dict)
    changes: int = -1
    _listeners: list[ChangeListener] = field(factory=list)
    # This replica's certificate: lifetime, and the shortest wait between two renewals (a
    # guard against renewing in a loop should the lifetime be tiny).
    cert_lifetime: timedelta = pki.REPLICA_LIFETIME
    min_renew_interval: float = 60.0
    cert_serial: str = ""
    _cert_valid: tuple[datetime, datetime] | None = None
    _client_context: ssl.SSLContext | None = None
    _polled: trio.Event = field(factory=trio.Event)
    _renewed: trio.Event = field(factory=trio.Event)
    _next_full_reload: float = -1.0
    _rng: random.Random = field(factory=random.Random)
    # Links to the other replicas for forwarded streams, kept between streams.
    links: LinkPool = field(factory=LinkPool)

    # --- identity of this replica -----------------------------------------------------------

    async def issue_certificate(self) -> None:
        """Issue (and record) this replica's ``replica/<id>`` certificate from the CA signer.

        The key stays in memory; a new one is made at every start.
        """
        key = pki.generate_key()
        cert_pem, issued = pki.issue_replica_cert(
            self.ca.signer,
            pki.make_csr(key, "replica"),
            self.replica_id,
            lifetime=self.cert_lifetime,
        )
        await self.store.certificates.record(issued.to_record())
        self._client_context = pki.client_ssl_context(
            self.ca.bundle_pem(), cert_pem=cert_pem, key_pem=key, alpn=["http/1.1"]
        )
        self.cert_serial = issued.serial
        self._cert_valid = (issued.not_before, issued.not_after)
        log.info("replica %s: certificate %s", self.replica_id, issued.serial)

    async def _renew_certificates(self) -> None:
        """Issue this replica's certificate again at 2/3 of its life, and labd's server
        certificate with it; failures are logged and retried with backoff."""
        await keep_renewed(
            self._validity,
            self._renew_certificates_now,
            rng=self._rng,
            log=log,
            what=f"replica {self.replica_id}",
            min_interval=self.min_renew_interval,
        )

    def _validity(self) -> tuple[datetime, datetime]:
        if self._cert_valid is None:
            raise RuntimeError("issue_certificate() has not run")
        return self._cert_valid

    async def _renew_certificates_now(self) -> None:
        await self.issue_certificate()
        self.ca.renew_server_cert()
        self._renewed.set()
        self._renewed = trio.Event()

    async def wait_renewed(self) -> None:
        """Wait for the next renewal of this replica's certificate (tests synchronise on it)."""
        await self._renewed.wait()

    def client_ssl_context(self) -> ssl.SSLContext:
        """The TLS client context (replica certificate, our CA) for connections to peers."""
        if self._client_context is None:
            raise RuntimeError("issue_certificate() has not run")
        return self._client_context

    # --- what others changed ----------------------------------------------------------------

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener()`` whenever another replica changed identities (drop caches)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def holder_of(self, server_name: str) -> str | None:
        """The live replica other than this one holding ``server_name``'s agent, if any."""
        replica = self.holders.get(server_name)
        if replica is None or replica == self.replica_id or replica not in self.peers:
            return None
        return replica

    async def refresh_holders(self) -> None:
        """Read the live replicas and the agents' leases now, not at the next poll: an agent
        may have connected to another replica since the last one."""
        at = now()
        self.peers = {r.id: r.url for r in await self.store.replicas.list(alive_at=at)}
        self.holders = await self.store.replicas.holders(at=at)

    async def wait_polled(self) -> None:
        """Wait for the end of the next poll (tests and benchmarks synchronise on it)."""
        await self._polled.wait()

    async def note_change(self) -> None:
        """Bump the change counter (this replica changed identities); failures are logged,
        the periodic full reload catches up."""
        try:
            await self.store.replicas.bump_changes()
        except LabError as exc:
            log.warning("cannot bump the cluster change counter: %s", exc.message)

    # --- the loop ---------------------------------------------------------------------------

    async def run(
        self,
        shutdown: trio.Event,
        url: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Register as ``url``, then renew and poll until ``shutdown``; deregister on the way out.

        Database failures are logged and retried at the next tick: labd keeps serving with the
        last snapshot while the database is away. Cancellation stops at once (the lease then
        expires by itself).
        """
        self.url = url
        await self._register()
        await self._poll()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.links.run)
            task_status.started()
            log.info("replica %s registered as %s", self.replica_id, url)
            nursery.start_soon(self._tick, self.renew_interval, self._register)
            nursery.start_soon(self._tick, self.poll_interval, self._poll)
            if self._cert_valid is not None:
                nursery.start_soon(self._renew_certificates)
            await shutdown.wait()
            nursery.cancel_scope.cancel()
        with trio.move_on_after(2), trio.CancelScope(shield=True):
            try:
                await self.store.replicas.remove(self.replica_id)
            except LabError as exc:
                log.warning("cannot deregister replica %s: %s", self.replica_id, exc.message)

    async def _tick(self, interval: float, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            await trio.sleep(interval)
            try:
                await fn()
            except LabError as exc:
                log.warning("cluster: %s", exc.message)

    async def _register(self) -> None:
        at = now()
        await self.store.replicas.register(
            Replica(
                id=self.replica_id,
                url=self.url,
                started_at=self.started_at,
                seen=at,
                lease_until=at + timedelta(seconds=self.lease_seconds),
            )
        )

    async def _poll(self) -> None:
        try:
            at = now()
            changes = await self.store.replicas.changes()
            due = trio.current_time() >= self._next_full_reload
            if changes != self.changes or due:
                self.changes = changes
                self._next_full_reload = trio.current_time() + self.full_reload_interval
                revoked = await self.revocations.reload()
                if revoked:
                    log.info("cluster: %d certificate(s) revoked elsewhere", len(revoked))
                for listener in list(self._listeners):
                    listener()
            self.peers = {r.id: r.url for r in await self.store.replicas.list(alive_at=at)}
            self.holders = await self.store.replicas.holders(at=at)
        finally:
            self._polled.set()
            self._polled = trio.Event()
