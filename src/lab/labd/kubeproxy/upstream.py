"""The API server end of the proxy: TLS from the cluster's kubeconfig, a pool of kept-alive
HTTP/1.1 connections for ordinary requests (:mod:`lab.labd.kubeproxy.pool`), and raw HTTP/1.1
connections for upgrades (exec, attach, port-forward).

The cluster's credentials stay here: the client certificate goes into the TLS context, the
bearer token into :func:`lab.labd.kubeproxy.headers.upstream_request_headers`; neither is ever
written back toward the client, a log or an audit entry.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import h11
import trio
from attrs import define, field, frozen

from lab import pki
from lab.errors import Invalid, Unavailable
from lab.labd.kubeproxy.pool import Pool

# An answer head larger than this from the API server is refused (it is only headers).
MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 70.0
"""Seconds labd waits for the head of the API server's answer (connect included) before it
answers 503: longer than the API server's own 60 s request timeout, so only an API server that
hangs or never answers meets it. A watch's body, once its head is in, is not bounded."""
POOL_SIZE = 256
"""Connections open at once to one cluster's API server (a watch holds one while it runs)."""
POOL_KEEP = 64
"""Idle connections kept per cluster for the next requests."""
CONNECTION_TTL = 5.0
"""Seconds a cluster's unsealed connection is reused before it is read from the store again
(a re-imported kubeconfig reaches every replica within this time)."""


class KubeConnectionLike(Protocol):
    """What the proxy reads of ``lab.kube.config.KubeConnection``."""

    @property
    def server(self) -> str: ...
    @property
    def ca_pem(self) -> str | bytes | None: ...
    @property
    def client_cert_pem(self) -> str | bytes | None: ...
    @property
    def client_key_pem(self) -> str | bytes | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def insecure_skip_verify(self) -> bool: ...


class ClusterConnections(Protocol):
    """``ctx().clusters``: the unsealed connection of a cluster (NotFound when unknown)."""

    async def connection(self, name: str) -> KubeConnectionLike: ...


def _pem(value: str | bytes | None) -> bytes | None:
    if value is None or value == "" or value == b"":
        return None
    return value.encode("ascii") if isinstance(value, str) else bytes(value)


def ssl_context(
    conn: KubeConnectionLike, *, alpn: tuple[str, ...] = ("http/1.1",)
) -> ssl.SSLContext:
    """The client TLS context for the cluster's API server (its CA, its client certificate)."""
    ca, cert, key = _pem(conn.ca_pem), _pem(conn.client_cert_pem), _pem(conn.client_key_pem)
    if ca is not None:
        ctx = pki.client_ssl_context(ca, cert_pem=cert, key_pem=key, alpn=list(alpn))
    else:
        ctx = ssl.create_default_context()
        ctx.set_alpn_protocols(list(alpn))
        if cert is not None and key is not None:
            pki.load_cert_chain(ctx, cert, key)
    if conn.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@frozen(kw_only=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or a prefix such as "/k8s/clusters/c-1", no trailing slash

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def endpoint(server: str) -> Endpoint:
    parts = urlsplit(server)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Invalid(
            f"cluster server {server!r} is not an http(s) URL", details={"fields": ["server"]}
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(
        scheme=parts.scheme, host=parts.hostname, port=port, base_path=parts.path.rstrip("/")
    )


@define
class Upstream:
    """One cluster's connection as last read, with its connection pool and TLS context."""

    name: str
    conn: KubeConnectionLike
    endpoint: Endpoint
    tls: ssl.SSLContext | None
    pool: Pool
    loaded: float = field(factory=time.monotonic)


class Upstreams:
    """Connections per cluster, read through ``clusters`` and reused for ``ttl`` seconds.

    Any replica can serve any cluster: the kubeconfig comes from the shared store. Call
    :meth:`aclose` when the app stops (closes the idle pooled connections).
    """

    def __init__(
        self, clusters: Callable[[], ClusterConnections | None], *, ttl: float = CONNECTION_TTL
    ) -> None:
        self.clusters = clusters
        self.ttl = ttl
        self._cache: dict[str, Upstream] = {}

    async def get(self, name: str) -> Upstream:
        """NotFound for an unknown cluster (from the registry); Unavailable when labd has no
        cluster registry."""
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached.loaded < self.ttl:
            return cached
        registry = self.clusters()
        if registry is None:
            raise Unavailable(
                "this labd has no cluster registry", details={"reason": "no_clusters"}
            )
        conn = await registry.connection(name)
        if cached is not None and cached.conn == conn:
            cached.loaded = time.monotonic()
            return cached
        where = endpoint(conn.server)
        tls = ssl_context(conn) if where.scheme == "https" else None
        pool = Pool(name, where.host, where.port, tls, size=POOL_SIZE, keep=POOL_KEEP)
        if cached is not None:
            # Requests may still run over the old pool: their connections close when they end.
            cached.pool.close()
        fresh = Upstream(name=name, conn=conn, endpoint=where, tls=tls, pool=pool)
        self._cache[name] = fresh
        return fresh

    async def aclose(self) -> None:
        for cached in self._cache.values():
            cached.pool.close()
        self._cache.clear()


@define
class RawAnswer:
    """The API server's answer head to an upgrade request, and the stream after it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    stream: trio.abc.Stream
    leftover: bytes
    """Bytes read after the head: the start of the tunnel (101) or of the body."""
    parser: h11.Connection


async def open_raw(
    up: Upstream, method: str, target: str, headers: list[tuple[bytes, bytes]]
) -> RawAnswer:
    """Send an upgrade request over a new connection and read the answer's head.

    Raises Unavailable when the API server cannot be reached, answers garbage or sends no
    head within :data:`HEAD_TIMEOUT`. The caller owns the returned stream (close it).
    Cancellation closes the connection.
    """
    try:
        with trio.fail_after(HEAD_TIMEOUT):
            return await _open_raw(up, method, target, headers)
    except trio.TooSlowError:
        raise no_answer(up.name) from None


def no_answer(cluster: str) -> Unavailable:
    return Unavailable(
        f"cluster {cluster}: the API server did not answer within {HEAD_TIMEOUT:g} s",
        details={"reason": "upstream_timeout"},
    )


async def _open_raw(
    up: Upstream, method: str, target: str, headers: list[tuple[bytes, bytes]]
) -> RawAnswer:
    where = up.endpoint
    try:
        tcp = await trio.open_tcp_stream(where.host, where.port)
    except OSError as exc:
        raise _unreachable(up, exc) from exc
    stream: trio.abc.Stream = tcp
    try:
        if up.tls is not None:
            tls_stream = trio.SSLStream(
                tcp, up.tls, server_hostname=where.host, https_compatible=True
            )
            await tls_stream.do_handshake()
            stream = tls_stream
        parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        request = h11.Request(method=method, target=where.base_path + target, headers=headers)
        await stream.send_all(parser.send(request) + parser.send(h11.EndOfMessage()))
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                parser.receive_data(bytes(data))
                continue
            if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                continue  # 100 Continue and the like
            if isinstance(event, h11.InformationalResponse | h11.Response):
                leftover = parser.trailing_data[0] if event.status_code == 101 else b""
                return RawAnswer(
                    status=event.status_code,
                    headers=list(event.headers.raw_items()),
                    stream=stream,
                    leftover=bytes(leftover),
                    parser=parser,
                )
            raise Unavailable(f"cluster {up.name}: the API server closed the connection")
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        await trio.aclose_forcefully(stream)
        raise _unreachable(up, exc) from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def _unreachable(up: Upstream, exc: BaseException) -> Unavailable:
    cause = exc.__cause__ or exc
    return Unavailable(
        f"cluster {up.name}: the API server at {up.endpoint.host}:{up.endpoint.port} "
        f"cannot be reached ({type(cause).__name__}: {cause})",
        details={"reason": "upstream_unreachable"},
    )
