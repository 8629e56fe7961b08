"""Serve an ASGI app with hypercorn under trio, exposing the TLS client certificate.

hypercorn 0.18.0 (pinned) verifies client certificates but never puts them into the ASGI scope.
:class:`PeerCertTCPServer` finishes the TLS handshake itself, reads the peer certificate from the
``trio.SSLStream`` and wraps the app of that one connection so every HTTP and WebSocket scope
carries the ASGI ``tls`` extension. Lifespan scopes are untouched. On plain-TCP connections no
``tls`` extension is added (as the ASGI TLS extension specification asks).

``scope["extensions"]["tls"]`` holds exactly these keys:

``client_cert_chain``  ``list[str]``: the client's leaf certificate as one PEM string, or ``[]``
                       when the client sent none (stdlib ``ssl`` on Python 3.11 does not expose
                       the rest of the chain; our clients send only the leaf anyway).
``client_cert_der``    ``bytes | None``: the same leaf certificate, DER (labctl's addition; feed
                       it to :func:`lab.pki.verify_peer` / :func:`lab.pki.identity_from_der`).
``client_cert_name``   ``str | None``: the leaf's subject as an RFC 4514 string (``CN=user/ann``).
``client_cert_error``  always ``None``: a certificate that fails verification aborts the
                       handshake, so no request ever sees one.
``server_cert``        always ``None`` (not needed by labctl).
``tls_version``        ``int | None``: 0x0303 for TLS 1.2, 0x0304 for TLS 1.3.
``cipher_suite``       always ``None`` (stdlib ``ssl`` gives names, the spec wants numbers).
"""

from __future__ import annotations

import logging
import math
import re
import ssl
from functools import partial
from typing import Any, cast

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import TrioSingleTask, WorkerContext
from hypercorn.typing import (
    AppWrapper,
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ConnectionState,
    LifespanState,
    Scope,
)
from hypercorn.utils import parse_socket_addr

from lab.runtime.connguard import ConnectionGuard, ConnectionLimits
from lab.runtime.front import ConnectionFront, PushedBackTLS, TLSConnectionFront
from lab.runtime.ports import naming_the_port
from lab.runtime.rawupgrade import upgrade_protocol_wrapper
from lab.runtime.tlsread import BULK_READ, receive_records

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

# RFC 4514 short names for the attributes our certificates (and most others) use.
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
    "userId": "UID",
}

log = logging.getLogger("lab.runtime.tls_server")


def _escape_rdn_value(value: str) -> str:
    out = "".join("\\" + ch if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _rfc4514(subject: Any) -> str | None:
    """RFC 4514 string from the ``subject`` of :meth:`ssl.SSLObject.getpeercert` (dict form)."""
    if not subject:
        return None
    rdns = []
    # getpeercert lists RDNs in certificate order; RFC 4514 writes them last first.
    for rdn in reversed(subject):
        rdns.append(
            "+".join(f"{_SHORT_NAMES.get(k, k)}={_escape_rdn_value(str(v))}" for k, v in rdn)
        )
    return ",".join(rdns)


def tls_extension(stream: trio.SSLStream[Any]) -> dict[str, Any]:
    """The ASGI ``tls`` extension for a stream whose handshake has completed."""
    der = stream.getpeercert(binary_form=True)
    info = stream.getpeercert() if der else None
    version = stream.version()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_der": der or None,
        "client_cert_name": _rfc4514(info.get("subject")) if info else None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": None,
    }


def single_cn_subject(info: Any) -> bool:
    """Whether a verified peer certificate's subject (``getpeercert()`` form) is exactly one
    RDN holding exactly one attribute, a commonName: the only shape labctl's CA issues. A
    certificate with two CNs, or a CN beside other attributes, is never read by "its first CN"."""
    subject: list[Any] = list((info or {}).get("subject") or ())
    if len(subject) != 1 or len(subject[0]) != 1:
        return False
    attribute = list(subject[0][0])
    return len(attribute) == 2 and attribute[0] == "commonName" and isinstance(attribute[1], str)


class _TLSScopeApp:
    """Adds one connection's ``tls`` extension to each HTTP/WebSocket scope of that connection."""

    def __init__(self, app: AppWrapper, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Any,
        call_soon: Any,
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions: dict[str, Any] = scope.setdefault("extensions", {})
            # A copy per scope: an app that edits its extension must not leak into the next
            # request on the same keep-alive connection.
            extensions["tls"] = {
                **self.tls,
                "client_cert_chain": list(self.tls["client_cert_chain"]),
            }
        await self.app(scope, receive, send, sync_spawn, call_soon)


def _peer_address(stream: trio.abc.Stream) -> str:
    sock = stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else None
    if sock is None and isinstance(stream, trio.SocketStream):
        sock = stream.socket
    if sock is None:
        return ""
    try:
        peer = sock.getpeername()
    except OSError:
        return ""
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _scope_addresses(
    sock: trio.socket.SocketType,
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The ASGI scope's ``client`` and ``server`` for a connection (as hypercorn gives them)."""
    try:
        return (
            parse_socket_addr(sock.family, sock.getpeername()),
            parse_socket_addr(sock.family, sock.getsockname()),
        )
    except OSError:
        return None, None


class PeerCertTCPServer(TCPServer):
    """hypercorn's trio ``TCPServer`` that exposes the client certificate in the scope.

    It also applies the listener's :class:`ConnectionGuard`: a source address holding too many
    unauthenticated connections has the new one closed before the TLS handshake, and handshake
    failures are counted and logged at a bounded rate.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        stream: trio.SSLStream[trio.SocketStream],
        *,
        guard: ConnectionGuard | None = None,
        front: ConnectionFront | None = None,
        tls_front: TLSConnectionFront | None = None,
        raw_upgrade_prefixes: tuple[str, ...] = (),
    ) -> None:
        # TCPServer.__init__ without its send lock and idle task: they are made when hypercorn
        # takes the connection (_run_protocol), so a connection a TLS front serves to its end
        # (an agent's WebSocket, 10,000 per labd) does not carry them.
        self.app = app
        self.config = config
        self.context = context
        self.stream = stream
        self.state = state
        self.guard = guard or ConnectionGuard()
        self.front = front
        self.tls_front = tls_front
        self.raw_upgrade_prefixes = raw_upgrade_prefixes
        self._held: bytes | None = None
        # After a 101 the bytes are another protocol's (a WebSocket, a tunnel): never held.
        self._switched = False

    async def run(self) -> None:
        address = _peer_address(self.stream)
        if not self.guard.admit(address):
            await trio.aclose_forcefully(self.stream)
            return
        authenticated = False
        try:
            if self.front is not None and isinstance(self.stream, trio.SocketStream):
                handed = await self.front.serve(self.stream)
                if handed is None:
                    return
                self.stream = handed  # a plain stream: hypercorn takes it as such
            if isinstance(self.stream, trio.SSLStream):
                try:
                    with trio.fail_after(self.config.ssl_handshake_timeout):
                        await self.stream.do_handshake()
                except trio.TooSlowError:
                    self.guard.handshake_failed(address, "timeout", "no handshake in time")
                    return
                except trio.BrokenResourceError as exc:
                    # e.g. an untrusted client certificate: drop the connection (as hypercorn
                    # does); trio.serve_listeners closes the stream.
                    self.guard.handshake_failed(address, "error", str(exc.__cause__ or exc))
                    return
                tls = tls_extension(self.stream)
                if tls["client_cert_der"] is not None and not single_cn_subject(
                    self.stream.getpeercert()
                ):
                    # Signed by our CA but not a subject any profile issues: refuse at the TLS
                    # layer, before a request is read (lab.pki.verify_peer refuses it too).
                    self.guard.handshake_failed(
                        address, "error", f"client certificate subject {tls['client_cert_name']!r}"
                    )
                    return
                if tls["client_cert_der"] is not None:
                    authenticated = True
                    self.guard.release(address)
                if self.tls_front is not None and self.stream.selected_alpn_protocol() != "h2":
                    handed = await self.tls_front.serve(
                        self.stream, tls, *_scope_addresses(self.stream.transport_stream.socket)
                    )
                    if handed is None:
                        return
                    self.stream = handed  # type: ignore[assignment]  # hypercorn reads it
                self.app = _TLSScopeApp(self.app, tls)
            await self._run_protocol()
        finally:
            if not authenticated:
                self.guard.release(address)

    async def _run_protocol(self) -> None:
        # hypercorn's TCPServer.run after the handshake (which is done), with our protocol
        # wrapper: it tunnels upgrades under raw_upgrade_prefixes (lab.runtime.rawupgrade).
        tls_stream: Any = self.stream
        if isinstance(tls_stream, PushedBackTLS):
            tls_stream = tls_stream.tls_stream
        if isinstance(tls_stream, trio.SSLStream):
            alpn_protocol = tls_stream.selected_alpn_protocol()
            socket = tls_stream.transport_stream.socket
            ssl_on = True
        else:
            alpn_protocol = "http/1.1"
            socket = cast(trio.SocketStream, self.stream).socket
            ssl_on = False
        self.send_lock = trio.Lock()
        self.idle_task = TrioSingleTask()
        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = upgrade_protocol_wrapper(self.raw_upgrade_prefixes)(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    ssl_on,
                    client,
                    server,
                    self.protocol_send,
                    alpn_protocol,
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
        except OSError:
            pass
        finally:
            await self._close()

    async def _read_data(self) -> None:
        # hypercorn's loop (TCPServer._read_data), reading TLS whole buffers at a time: its
        # receive_some returns one 16 KiB record, and each call runs h11 or wsproto and the
        # app's queue once (see lab.runtime.tlsread).
        stream = self.stream
        while True:
            try:
                with trio.fail_after(self.config.read_timeout or math.inf):
                    if isinstance(stream, trio.SSLStream):
                        data: bytes | bytearray = await receive_records(stream, BULK_READ)
                    else:
                        data = await stream.receive_some(BULK_READ)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if not data:
                break
        await self.protocol.handle(Closed())
        # The peer is gone: hypercorn would keep the connection (and its socket) until the
        # keep-alive timer armed after the last request fired. Stop that timer now.
        await self.idle_task.stop()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self._send_raw(event)
            return
        await self._flush_held()
        # quart-trio cancels the app task once the response is sent, and hypercorn sends the
        # protocol's Updated(idle=True) (which arms the keep-alive timer) and Closed (after an
        # early error response) from that task: cancelled, the timer is never armed and the
        # connection is never closed. Shield them, bounded so a stuck peer cannot pin the task.
        if not isinstance(event, Updated | Closed):
            await super().protocol_send(event)
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.config.graceful_timeout + 1.0
            await super().protocol_send(event)

    async def _send_raw(self, event: RawData) -> None:
        """Send an HTTP/1.1 response head together with the body that follows it.

        A profile of labd answering REST requests showed the two sends per response (head,
        then body: two TLS records, two syscalls waking the peer) at a fifth of its CPU. A head
        with a Content-Length is always followed at once by its body (or by the empty end of
        message of a HEAD or empty answer), so it waits for it; a head without one (chunked
        streams, 101 for a WebSocket) leaves at once, and after a 101 nothing is held again.
        """
        if self._held is not None:
            event = RawData(data=self._held + event.data, address=event.address)
            self._held = None
        elif self._switched:
            pass
        elif event.data.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
            self._switched = True
        elif _fixed_length_head(event.data):
            self._held = event.data
            return
        await super().protocol_send(event)

    async def _flush_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            await super().protocol_send(RawData(data=held))


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[^\r]*close", re.IGNORECASE)


def _fixed_length_head(data: bytes) -> bool:
    """Whether ``data`` is a whole HTTP/1.x final response head with a Content-Length that
    keeps the connection open. An answer that closes it (an early error while the client may
    still be sending its body) leaves as before: head first, so the client's upload is more
    likely to stop before the close turns into a reset."""
    return (
        data.startswith(b"HTTP/1.")
        and data.endswith(b"\r\n\r\n")
        and data[9:10] != b"1"
        and _CONTENT_LENGTH.search(data) is not None
        and _CLOSE.search(data) is None
    )


async def serve_asgi(
    app: ASGIFramework | Any,
    *,
    host: str,
    port: int,
    shutdown_event: trio.Event,
    ssl_context: ssl.SSLContext | None = None,
    graceful_timeout: float = 5.0,
    limits: ConnectionLimits | None = None,
    guard: ConnectionGuard | None = None,
    front: ConnectionFront | None = None,
    tls_front: TLSConnectionFront | None = None,
    raw_upgrade_prefixes: tuple[str, ...] = (),
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ASGI ``app`` (HTTP/1.1, h2 over TLS, WebSocket) until ``shutdown_event`` is set.

    Binds ``host:port`` (0 picks a free port; give an IP literal: a name resolving to several
    addresses binds several sockets and only the first is reported), runs the app's lifespan
    startup, starts accepting, then calls ``task_status.started((host, real_port))``. With
    ``ssl_context`` every connection is TLS (build it with :func:`lab.pki.server_ssl_context`)
    and scopes carry the ``tls`` extension described in the module docstring.

    ``guard`` (or a fresh one over ``limits``, defaults when both are None) bounds every
    connection: the TLS handshake and the wait for each request are timed out, and a source
    address may hold only so many unauthenticated connections (see :mod:`lab.runtime.connguard`).
    ``front`` (plain TCP only) reads each connection first and answers what it knows itself,
    handing the rest to hypercorn (see :mod:`lab.runtime.front`); ``tls_front`` (TLS only)
    does the same for HTTP/1.1 connections once their handshake is done.

    When ``shutdown_event`` is set, the listeners close at once; open connections get
    ``graceful_timeout`` seconds to finish (idle keep-alive connections close right away)
    and are then cancelled; lifespan shutdown runs; the function returns. WebSocket handlers
    are not warned by hypercorn: apps that hold WebSockets must say goodbye themselves on the
    same event. Cancelling the caller's scope tears everything down immediately. Raises
    :class:`lab.errors.AddressInUse` naming the port when it is taken, ``OSError`` when the
    address cannot be bound otherwise, and whatever lifespan startup raises.

    HTTP/1.1 upgrade requests to paths under ``raw_upgrade_prefixes`` are tunnelled by the app
    byte for byte (WebSocket and SPDY alike; see :mod:`lab.runtime.rawupgrade`).
    """
    guard = guard or ConnectionGuard(limits or ConnectionLimits())
    config = Config()
    config.graceful_timeout = graceful_timeout
    # 0 turns a timeout off.
    config.ssl_handshake_timeout = guard.limits.handshake_timeout or math.inf
    config.keep_alive_timeout = guard.limits.idle_timeout or math.inf
    config.accesslog = None
    config.errorlog = logging.getLogger("lab.http")
    app_wrapper = ASGIWrapper(app)
    # Bind before lifespan startup: a busy port fails fast, naming the port.
    with naming_the_port(host, port):
        socket_listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        await _serve(
            app_wrapper,
            config,
            socket_listeners,
            ssl_context=ssl_context,
            shutdown_event=shutdown_event,
            guard=guard,
            front=front if ssl_context is None else None,
            tls_front=tls_front if ssl_context is not None else None,
            raw_upgrade_prefixes=raw_upgrade_prefixes,
            task_status=task_status,
        )
    finally:
        # serve_listeners closes them on the normal path; this covers early failures
        # (lifespan startup errors, cancellation). Closing twice is harmless.
        for listener in socket_listeners:
            await trio.aclose_forcefully(listener)


async def _serve(
    app_wrapper: AppWrapper,
    config: Config,
    socket_listeners: list[trio.SocketListener],
    *,
    ssl_context: ssl.SSLContext | None,
    shutdown_event: trio.Event,
    guard: ConnectionGuard,
    front: ConnectionFront | None,
    tls_front: TLSConnectionFront | None,
    raw_upgrade_prefixes: tuple[str, ...],
    task_status: trio.TaskStatus[tuple[str, int]],
) -> None:
    # Modelled on hypercorn.trio.run.worker_serve, with our TCPServer and our own sockets.
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(app_wrapper, config, lifespan_state)
    context = WorkerContext(None)
    graceful_timeout = config.graceful_timeout

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            listeners: list[trio.abc.Listener[Any]] = []
            for listener in socket_listeners:
                if ssl_context is None:
                    listeners.append(listener)
                else:
                    # https_compatible: HTTP clients routinely drop TLS without close_notify.
                    listeners.append(trio.SSLListener(listener, ssl_context, https_compatible=True))
            handler = partial(
                PeerCertTCPServer,
                app_wrapper,
                config,
                context,
                ConnectionState(lifespan_state.copy()),
                guard=guard,
                front=front,
                tls_front=tls_front,
                raw_upgrade_prefixes=raw_upgrade_prefixes,
            )
            bound = socket_listeners[0].socket.getsockname()
            try:
                async with trio.open_nursery() as accept_nursery:
                    # serve_listeners closes the listeners when it is cancelled.
                    await accept_nursery.start(
                        partial(
                            trio.serve_listeners, handler, listeners, handler_nursery=server_nursery
                        )
                    )
                    log.info(
                        "serving on %s:%d (%s)",
                        bound[0],
                        bound[1],
                        "https" if ssl_context else "http",
                    )
                    task_status.started((bound[0], bound[1]))
                    await shutdown_event.wait()
                    accept_nursery.cancel_scope.cancel()
            finally:
                # Tell idle keep-alive connections to close, then bound the drain.
                if front is not None:
                    front.close_idle()
                if tls_front is not None:
                    tls_front.close_idle()
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
