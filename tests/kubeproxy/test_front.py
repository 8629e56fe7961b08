"""``GET /k8s/…`` answered on the TLS connection before hypercorn (lab.labd.kubeproxy.front).

The head parser takes only a strict subset of HTTP/1.1 and hands everything else to hypercorn;
through a real labd, answers keep their order on one kept-alive connection, the connection
passes to hypercorn mid-way without losing a byte, an answer the API server cuts short reaches
the client cut (never as a whole one), and idle connections close.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import h11
import pytest
import trio

from lab.labd.kubeproxy.front import HAND_OFF, MAX_HEAD, Head, parse_head
from tests.kube.kmock_server import KubeAPI
from tests.kubeproxy.rig import ProxyRig, proxy_rig
from tests.labd.harness import Credentials

PODS = b"/k8s/home/api/v1/namespaces/default/pods"
CAP = 120


def test_the_front_takes_plain_gets_of_k8s_only() -> None:
    head = b"GET /k8s/c/api?x=1 HTTP/1.1\r\nHost: labd\r\nAccept: */*\r\nX-Request-Id: r1\r\n\r\n"
    parsed = parse_head(head + b"GET /k8s/next")
    assert parsed == Head(
        target=b"/k8s/c/api?x=1",
        headers=[(b"host", b"labd"), (b"accept", b"*/*"), (b"x-request-id", b"r1")],
        size=len(head),
        close=False,
    )
    closing = parse_head(b"GET /k8s/c HTTP/1.1\r\nHost: l\r\nConnection: keep-alive, Close\r\n\r\n")
    assert isinstance(closing, Head) and closing.close
    for partial_head in (b"", b"G", b"GET /k8s/", b"GET /k8s/c HTTP/1.1\r\nHost: l\r\n"):
        assert parse_head(partial_head) is None


@pytest.mark.parametrize(
    "head",
    [
        b"POST /k8s/c/api HTTP/1.1\r\nHost: l\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\nExpect: 100-continue\r\n\r\n",
        b"GET /k8s/c/x/exec HTTP/1.1\r\nHost: l\r\nConnection: Upgrade\r\n"
        b"Upgrade: SPDY/3.1\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\nHost: m\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.1\r\nAccept: */*\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.0\r\nHost: l\r\n\r\n",
        b"GET /api/v1/pods HTTP/1.1\r\nHost: l\r\n\r\n",
        b"GET /k8s%2fc/api HTTP/1.1\r\nHost: l\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\n Folded: x\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\nBad Name: x\r\n\r\n",
        b"GET /k8s/c/api HTTP/1.1\nHost: l\n\n",
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\nX: " + b"a" * MAX_HEAD,
        b"GET /k8s/c/api HTTP/1.1\r\nHost: l\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        b"GET  /k8s/c/api HTTP/1.1\r\nHost: l\r\n\r\n",
    ],
)
def test_anything_else_goes_to_hypercorn(head: bytes) -> None:
    assert parse_head(head) is HAND_OFF


class Client:
    """One HTTP/1.1 TLS connection to labd; answers read with h11 (one parser per answer, so
    requests can be written ahead, pipelined)."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.leftover = b""

    async def answer(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """The next whole answer (to a GET): status, headers, body."""
        self.conn = conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "labd")]))
        conn.send(h11.EndOfMessage())
        if self.leftover:
            conn.receive_data(self.leftover)
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers.raw_items())
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.leftover = bytes(conn.trailing_data[0])
                return status, headers, body
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def closed(self) -> bool:
        """Whether labd closes the connection (nothing more arrives)."""
        try:
            return await self.stream.receive_some(65536) == b""
        except trio.BrokenResourceError:
            return True


@asynccontextmanager
async def connect(rig: ProxyRig, creds: Credentials) -> AsyncIterator[Client]:
    ctx = rig.labd.ssl_context(creds, alpn=["http/1.1"])
    tcp = await trio.open_tcp_stream(rig.labd.host, rig.labd.port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=rig.labd.host, https_compatible=True)
    async with stream:
        await stream.do_handshake()
        yield Client(stream)


def get(target: bytes, *extra: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: labd\r\n%s\r\n" % (
        target,
        b"".join(e + b"\r\n" for e in extra),
    )


async def test_pipelined_gets_then_hypercorn_on_the_same_connection(
    tmp_path: Path, recording_api: KubeAPI
) -> None:
    with trio.fail_after(CAP):
        async with (
            proxy_rig(tmp_path, {"home": recording_api}) as rig,
            connect(rig, rig.admin) as client,
        ):
            # Two GETs in one write, then a request the front does not take (hypercorn's).
            await client.stream.send_all(
                get(PODS, b"X-Request-Id: first", b"Impersonate-User: admin")
                + get(PODS + b"?limit=1", b"X-Request-Id: second")
                + get(b"/health/live")
            )
            first, second, health = [await client.answer() for _ in range(3)]
            assert first[0] == 200 and json.loads(first[2])["kind"] == "PodList"
            assert second[0] == 200 and json.loads(second[2])["kind"] == "PodList"
            assert health[0] == 200 and json.loads(health[2]) == {"status": "ok"}
            assert b"server" not in first[1] or first[1][b"server"] != b"hypercorn-h11"
            assert health[1][b"server"] == b"hypercorn-h11"
            # Hypercorn has the connection now, /k8s included.
            await client.stream.send_all(get(PODS, b"X-Request-Id: third"))
            third = await client.answer()
            assert third[0] == 200 and json.loads(third[2])["kind"] == "PodList"
            entries = [
                e
                for e in await rig.audit(action="kube:list")
                if e["details"].get("request_id") in ("first", "second", "third")
            ]
            assert sorted(e["details"]["request_id"] for e in entries) == [
                "first",
                "second",
                "third",
            ]
            assert {e["details"]["impersonated_user"] for e in entries} == {"labd:admin"}


async def test_a_refusal_and_connection_close_from_the_front(
    tmp_path: Path, recording_api: KubeAPI
) -> None:
    with trio.fail_after(CAP):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            viewer = await rig.user("vic")
            async with connect(rig, viewer) as client:
                await client.stream.send_all(get(PODS))
                status, headers, body = await client.answer()
                assert status == 403 and json.loads(body)["reason"] == "Forbidden"
                assert int(headers[b"content-length"]) == len(body)
                await client.stream.send_all(get(PODS, b"Connection: close"))
                assert (await client.answer())[0] == 403
                assert await client.closed()
            denied = await rig.audit(action="kube:list", result="denied")
            assert len(denied) == 2 and {e["user"] for e in denied} == {"user/vic"}


@asynccontextmanager
async def cutting_api_server() -> AsyncIterator[str]:
    """Answers /version; a pods list with a body cut short (``/pods/short`` by its
    Content-Length, ``/pods/chunks`` inside its chunks), then closes."""

    async def serve(stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")  # GETs: no bodies
                target = head.split(b" ")[1]
                if target.startswith(b"/version"):
                    body = json.dumps({"major": "1", "minor": "31", "gitVersion": "v1.31.0"})
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
                    )
                    continue
                if target.endswith(b"/short"):
                    await stream.send_all(
                        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"kind":"Pod",'
                    )
                else:
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b'e\r\n{"kind":"Pod",\r\n40\r\n{"metadata"'
                    )
                return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield (
            "apiVersion: v1\nkind: Config\ncurrent-context: cut\n"
            f"clusters: [{{name: cut, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: cut, user: {token: t0ken}}]\n"
            "contexts: [{name: cut, context: {cluster: cut, user: cut}}]\n"
        )
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("which", [b"short", b"chunks"])
async def test_an_answer_the_api_server_cuts_reaches_the_client_cut(
    tmp_path: Path, which: bytes
) -> None:
    with trio.fail_after(CAP):
        async with (
            cutting_api_server() as kubeconfig,
            proxy_rig(tmp_path, {"cut": kubeconfig}) as rig,
            connect(rig, rig.admin) as client,
        ):
            await client.stream.send_all(get(b"/k8s/cut/api/v1/namespaces/default/pods/" + which))
            # The head came, then the connection closed inside the body.
            with pytest.raises(h11.RemoteProtocolError, match="complete message body"):
                await client.answer()


async def test_an_idle_connection_is_closed(tmp_path: Path, recording_api: KubeAPI) -> None:
    with trio.fail_after(CAP):
        async with (
            proxy_rig(tmp_path, {"home": recording_api}, idle_timeout=0.5) as rig,
            connect(rig, rig.admin) as client,
        ):
            await client.stream.send_all(get(PODS))
            assert (await client.answer())[0] == 200
            assert await client.closed()


async def test_shutdown_closes_an_idle_connection_at_once(
    tmp_path: Path, recording_api: KubeAPI
) -> None:
    with trio.fail_after(CAP):
        async with (
            proxy_rig(
                tmp_path, {"home": recording_api}, shutdown_grace=90.0, idle_timeout=300.0
            ) as rig,
            connect(rig, rig.admin) as client,
        ):
            await client.stream.send_all(get(PODS))
            assert (await client.answer())[0] == 200
            rig.labd.shutdown.set()
            # Not after the 90 s grace: the front closes connections waiting for a request.
            with trio.fail_after(30):
                assert await client.closed()
