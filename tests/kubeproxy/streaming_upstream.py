"""A small API server upstream that speaks the streaming upgrades kubectl uses, over TLS.

- ``…/exec`` and ``…/attach`` with ``Upgrade: websocket`` and a ``v5.channel.k8s.io`` or
  ``v4.channel.k8s.io`` subprotocol: it writes ``ran: COMMAND`` on stdout (channel 1), echoes
  every stdin (channel 0) line upper-cased on stdout, and on a line ``exit N`` (or stdin closed,
  v5's channel 255) sends the ``Status`` on channel 3 (exit code N, 0 when stdin closed) and
  closes — what kubectl exec -i needs;
- ``…/pods/spdy/exec`` with ``Upgrade: SPDY/3.1``: the same exec, in SPDY/3 frames
  (:mod:`tests.kubeproxy.spdy`), for kubectl with WebSockets turned off, and
  ``…/pods/spdy/portforward``: each forwarded connection's bytes echoed back behind ``echo:``;
- ``…/portforward`` with a WebSocket (``v4.channel.k8s.io`` or ``portforward.k8s.io``), and any
  path with ``Upgrade: SPDY/3.1``: after the 101 every byte is echoed back behind the prefix
  ``echo:`` (bytes both ways, no framing assumed);
- ``GET …?watch=true``: a chunked watch sending one ``ADDED`` event, then nothing until the
  client leaves (``&timeoutSeconds=0``: it ends the answer right after the event);
- ``GET …/pods/NAME`` (a running pod with one container ``main``: kubectl exec reads it
  first) and ``/version`` (labd's import checks it); anything else: 404 as a ``Status``.

Every request's method, target and headers are kept in :attr:`StreamingUpstream.seen`; each
connection's end (``eof`` when the peer closed) in :attr:`ended`, with an event per change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping
from wsproto.utilities import generate_accept_token

from lab import pki
from lab.kube import KubeConnection
from tests.kubeproxy.spdy import ExecSession, ForwardSession

_VERBS = ["get", "list", "create", "delete"]
_DISCOVERY: dict[str, Any] = {
    "/api": {"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": _VERBS,
            },
            {
                "name": "pods/exec",
                "singularName": "",
                "namespaced": True,
                "kind": "PodExecOptions",
                "verbs": ["create", "get"],
            },
            {
                "name": "pods/portforward",
                "singularName": "",
                "namespaced": True,
                "kind": "PodPortForwardOptions",
                "verbs": ["create", "get"],
            },
        ],
    },
}
TUNNELED_SPDY = "SPDY/3.1+portforward.k8s.io"  # kubectl >= 1.31's port-forward over WebSocket
CHANNEL_PROTOCOLS = (TUNNELED_SPDY, "v5.channel.k8s.io", "v4.channel.k8s.io", "portforward.k8s.io")


@attrs.define
class StreamingUpstream:
    url: str
    ca_pem: bytes
    token: str
    seen: list[dict[str, Any]] = attrs.field(factory=list)
    ended: list[str] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def note_end(self, how: str) -> None:
        self.ended.append(how)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_ended(self, count: int) -> None:
        while len(self.ended) < count:
            await self.changed.wait()

    @property
    def kubeconfig(self) -> str:
        import base64

        import yaml

        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "s",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "s", "user": {"token": self.token}}],
            "contexts": [{"name": "s", "context": {"cluster": "s", "user": "s"}}],
            "current-context": "s",
        }
        return str(yaml.safe_dump(doc))

    def connection(self) -> KubeConnection:
        return KubeConnection(server=self.url, ca_pem=self.ca_pem, token=self.token)


def _status(code: int | None) -> bytes:
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    ).encode()


async def _read_head(stream: trio.abc.Stream) -> tuple[h11.Request, bytes] | None:
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            return event, bytes(conn.trailing_data[0])
        else:
            return None


async def _send_101(stream: trio.abc.Stream, headers: list[tuple[str, str]]) -> None:
    head = "HTTP/1.1 101 Switching Protocols\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    await stream.send_all((head + "\r\n").encode())


async def _echo_raw(stream: trio.abc.Stream, leftover: bytes) -> None:
    if leftover:
        await stream.send_all(b"echo:" + leftover)
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        await stream.send_all(b"echo:" + data)


class WebSocketBytes(trio.abc.Stream):
    """The byte stream carried in a WebSocket's binary messages (what kubectl's port-forward
    tunnels SPDY in), as a trio stream."""

    def __init__(self, stream: trio.abc.Stream, leftover: bytes) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.SERVER, trailing_data=leftover)
        self.pending: list[bytes] = []
        self.closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self.pending and not self.closed:
            for event in self.ws.events():
                if isinstance(event, Ping):
                    await self.stream.send_all(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = True
                elif isinstance(event, BytesMessage) and event.data:
                    self.pending.append(bytes(event.data))  # (kubectl sends empty ones too)
            if self.pending or self.closed:
                break
            data = await self.stream.receive_some(65536)
            if not data:
                self.closed = True
                break
            self.ws.receive_data(data)
        return self.pending.pop(0) if self.pending else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(data=bytes(data))))

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _watch(stream: trio.abc.Stream, *, once: bool) -> None:
    """A chunked watch: one ADDED event at once; then the end (``once``) or nothing more
    until the client goes away."""
    event = json.dumps({"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "a"}}})
    chunk = (event + "\n").encode()
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n"
    )
    if once:
        await stream.send_all(b"0\r\n\r\n")
        return
    while await stream.receive_some(65536):
        pass


async def _exec_ws(stream: trio.abc.Stream, leftover: bytes, command: str, protocol: str) -> None:
    ws = Connection(ConnectionType.SERVER, trailing_data=leftover)

    async def send(channel: int, data: bytes) -> None:
        await stream.send_all(ws.send(BytesMessage(data=bytes([channel]) + data)))

    async def finish(code: int) -> None:
        await send(3, _status(code))
        await stream.send_all(ws.send(CloseConnection(code=1000)))

    await send(1, f"ran: {command}\n".encode())
    buffer = b""
    while True:
        for event in ws.events():
            if isinstance(event, Ping):
                await stream.send_all(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                return
            elif isinstance(event, BytesMessage):
                data = bytes(event.data)
                if protocol == "v5.channel.k8s.io" and data[:2] == b"\xff\x00":
                    await finish(0)  # stdin closed
                    return
                if data[:1] != b"\x00":
                    continue  # resize and the like
                buffer += data[1:]
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.startswith(b"exit "):
                        await finish(int(line.split()[1]))
                        return
                    await send(1, line.upper() + b"\n")
        data = await stream.receive_some(65536)
        if not data:
            return
        ws.receive_data(data)


async def _serve_one(up: StreamingUpstream, stream: trio.SSLStream[trio.SocketStream]) -> None:
    how = "closed"
    try:
        got = await _read_head(stream)
        if got is None:
            return
        request, leftover = got
        headers = [(k.decode(), v.decode()) for k, v in request.headers.raw_items()]
        up.seen.append(
            {
                "method": request.method.decode(),
                "target": request.target.decode(),
                "headers": headers,
            }
        )
        lowered = {k.lower(): v for k, v in headers}
        target = urlsplit(request.target.decode())
        upgrade = lowered.get("upgrade", "").lower()
        if f"Bearer {up.token}" != lowered.get("authorization"):
            await stream.send_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
            return
        if upgrade == "spdy/3.1":
            answer = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
            offered = [
                p.strip()
                for k, v in headers
                if k.lower() == "x-stream-protocol-version"
                for p in v.split(",")
            ]
            if offered:
                chosen = "v4.channel.k8s.io" if "v4.channel.k8s.io" in offered else offered[0]
                answer.append(("X-Stream-Protocol-Version", chosen))
            await _send_101(stream, answer)
            if target.path.endswith("/pods/spdy/exec"):
                command = " ".join(parse_qs(target.query).get("command", []))
                await ExecSession(stream, command).run(leftover)
            elif target.path.endswith("/pods/spdy/portforward"):
                await ForwardSession(stream).run(leftover)
            else:
                await _echo_raw(stream, leftover)
            how = "eof"
            return
        if upgrade == "websocket":
            offered = [p.strip() for p in lowered.get("sec-websocket-protocol", "").split(",")]
            chosen = next((p for p in CHANNEL_PROTOCOLS if p in offered), None)
            key = lowered.get("sec-websocket-key", "").encode()
            if chosen is None or not key:
                await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                return
            await _send_101(
                stream,
                [
                    ("Connection", "Upgrade"),
                    ("Upgrade", "websocket"),
                    ("Sec-WebSocket-Accept", generate_accept_token(key).decode()),
                    ("Sec-WebSocket-Protocol", chosen),
                ],
            )
            if chosen == TUNNELED_SPDY:
                await ForwardSession(WebSocketBytes(stream, leftover)).run(b"")
            elif target.path.endswith(("/exec", "/attach")):
                command = " ".join(parse_qs(target.query).get("command", []))
                await _exec_ws(stream, leftover, command, chosen)
            else:
                await _echo_raw(stream, leftover)
            how = "eof"
            return
        if parse_qs(target.query).get("watch") == ["true"]:
            await _watch(stream, once=parse_qs(target.query).get("timeoutSeconds") == ["0"])
            how = "eof"
            return
        pod = target.path.startswith("/api/v1/namespaces/") and "/pods/" in target.path
        if request.method == b"GET" and pod and target.path.count("/") == 6:
            name = target.path.rsplit("/", 1)[1]
            body = json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": target.path.split("/")[4]},
                    "spec": {"containers": [{"name": "main", "image": "busybox"}]},
                    "status": {"phase": "Running"},
                }
            ).encode()
            status = b"200 OK"
        elif target.path in _DISCOVERY:
            body = json.dumps(_DISCOVERY[target.path]).encode()
            status = b"200 OK"
        elif target.path == "/version":
            body = json.dumps({"major": "1", "minor": "31", "gitVersion": "v1.31.4"}).encode()
            status = b"200 OK"
        else:
            body = json.dumps({"kind": "Status", "apiVersion": "v1", "code": 404}).encode()
            status = b"404 Not Found"
        await stream.send_all(
            b"HTTP/1.1 "
            + status
            + b"\r\nconnection: close\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        how = "broken"
    finally:
        up.note_end(how)
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def streaming_upstream() -> AsyncIterator[StreamingUpstream]:
    """Serve on 127.0.0.1:0 with its own CA; stopped when the block ends."""
    ca = pki.create_ca("streaming upstream CA")
    key = pki.generate_key()
    cert, _ = pki.issue_server_cert(ca, pki.make_csr(key, "upstream"))
    ctx = pki.server_ssl_context(cert, key, None, client_auth="none", alpn=["http/1.1"])
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    up = StreamingUpstream(url=f"https://127.0.0.1:{port}", ca_pem=ca.cert_pem(), token="t0ken")

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await _serve_one(up, stream)

    tls = [trio.SSLListener(listener, ctx, https_compatible=True) for listener in listeners]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, tls)
        try:
            yield up
        finally:
            nursery.cancel_scope.cancel()
