"""exec, attach and port-forward through labd: WebSocket (v5/v4 channel) and SPDY/3.1 upgrades
pass byte for byte both ways; either side ending ends the other; start and end are audited."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage

from tests.kubeproxy.rig import KUBECTL, ProxyRig, proxy_rig, raw_request, requires_kubectl
from tests.kubeproxy.streaming_upstream import streaming_upstream
from tests.labd.harness import Credentials

POD = "/k8s/s/api/v1/namespaces/default/pods/web"


def sessions(entries: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["action"] == action and "session_id" in e["details"]]


async def upgrade(
    rig: ProxyRig,
    creds: Credentials,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    early: bytes = b"",
) -> tuple[trio.SSLStream[trio.SocketStream], int, dict[str, str], bytes]:
    """Send an upgrade request (and ``early`` bytes right behind its head); the stream, the
    answer's status and headers, and the bytes read past its head."""
    ctx = rig.labd.ssl_context(creds, alpn=["http/1.1"])
    tcp = await trio.open_tcp_stream(rig.labd.host, rig.labd.port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=rig.labd.host)
    conn = h11.Connection(h11.CLIENT)
    head = conn.send(
        h11.Request(method=method, target=target, headers=[("Host", "labd"), *headers])
    )
    await stream.send_all(head + early)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.InformationalResponse | h11.Response):
            answer = {k.decode().lower(): v.decode() for k, v in event.headers.raw_items()}
            rest = bytes(conn.trailing_data[0]) if event.status_code == 101 else b""
            return stream, event.status_code, answer, rest


async def read_until(stream: trio.abc.Stream, buffer: bytes, needle: bytes) -> bytes:
    while needle not in buffer:
        data = await stream.receive_some(65536)
        assert data, buffer
        buffer += data
    return buffer


@requires_kubectl
async def test_kubectl_exec_over_websocket(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            kc = rig.kubeconfig(rig.admin, cluster="s", namespace="default")
            out = await rig.kubectl(
                kc,
                "exec",
                "-i",
                "web",
                "--",
                "sh",
                "-c",
                "read x",
                stdin=b"hello\nworld\nexit 3\n",
            )
            assert out.returncode == 3, out.stderr
            assert out.stdout == b"ran: sh -c read x\nHELLO\nWORLD\n"
            (request,) = [
                r
                for r in up.seen
                if r["target"].startswith("/api/v1/namespaces/default/pods/web/exec")
            ]
            headers = [(k.lower(), v) for k, v in request["headers"]]
            assert ("upgrade", "websocket") in headers
            assert [v for k, v in headers if k == "impersonate-user"] == ["labd:admin"]
            assert [v for k, v in headers if k == "impersonate-group"] == ["system:masters"]
            entries = sessions(await rig.audit(), "kube:exec")
            assert [e["details"]["phase"] for e in entries] == ["start", "end"]
            start, end = entries
            assert start["details"]["session_id"] == end["details"]["session_id"]
            assert start["resource"] == "cluster/s/namespace/default/pods/web"
            assert start["details"]["protocol"] == "v5.channel.k8s.io"
            assert end["details"]["exit_status"] == 3
            assert end["details"]["ended_by"] == "upstream"
            assert end["details"]["bytes_up"] > len(b"hello\nworld\nexit 3\n")
            assert end["details"]["bytes_down"] > len(out.stdout)


async def test_spdy_passes_through_byte_for_byte(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            early = b"\x80\x03\x00\x01early-frame"  # sent right behind the request head
            stream, status, answer, rest = await upgrade(
                rig,
                rig.admin,
                "POST",
                f"{POD}/exec?command=sh",
                [
                    ("Connection", "Upgrade"),
                    ("Upgrade", "SPDY/3.1"),
                    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
                    ("Impersonate-User", "system:admin"),
                    ("Authorization", "Bearer stolen"),
                ],
                early=early,
            )
            async with stream:
                assert status == 101
                assert answer["upgrade"] == "SPDY/3.1"
                assert answer["x-stream-protocol-version"] == "v4.channel.k8s.io"
                buffer = await read_until(stream, rest, b"echo:" + early)
                payload = bytes(range(256)) * 64 + secrets.token_bytes(5000)
                await stream.send_all(payload)
                buffer = await read_until(stream, buffer, payload[-5000:])
                assert buffer.replace(b"echo:", b"") == early + payload
            await up.wait_ended(2)  # the import's /version and the tunnel
            assert up.ended[-1] == "eof"  # the client left: the upstream side was closed
            (request,) = [r for r in up.seen if "/exec" in r["target"]]
            headers = [(k.lower(), v) for k, v in request["headers"]]
            assert [v for k, v in headers if k == "impersonate-user"] == ["labd:admin"]
            assert [v for k, v in headers if k == "authorization"] == ["Bearer t0ken"]
            start, end = sessions(await rig.audit(), "kube:exec")
            assert start["details"]["protocol"] == "SPDY/3.1"
            assert end["details"]["ended_by"] == "client"
            assert end["details"]["bytes_up"] == len(early) + len(payload)
            assert end["details"]["exit_status"] is None


async def test_websocket_port_forward_and_refusals(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            key = base64.b64encode(os.urandom(16)).decode()
            ws_headers = [
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", key),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Protocol", "v4.channel.k8s.io"),
            ]
            stream, status, answer, rest = await upgrade(
                rig, rig.admin, "GET", f"{POD}/portforward?ports=8080", ws_headers
            )
            async with stream:
                assert status == 101
                assert answer["sec-websocket-protocol"] == "v4.channel.k8s.io"
                ws = Connection(ConnectionType.CLIENT, trailing_data=rest)
                await stream.send_all(ws.send(BytesMessage(data=b"\x00\x90\x1fGET / HTTP/1.0")))
                # The upstream echoes the raw bytes: the client sees its own frame, masked.
                data = await read_until(stream, rest, b"echo:")
                assert len(data) >= len(b"echo:") + 2 + 4 + 17
            start, end = sessions(await rig.audit(), "kube:portforward")
            assert (start["details"]["phase"], end["details"]["phase"]) == ("start", "end")

            # A viewer may not port-forward: refused before any byte reaches the cluster.
            vic = await rig.user("vic", "viewer")
            before = len(up.seen)
            stream, status, _, _ = await upgrade(
                rig, vic, "GET", f"{POD}/portforward?ports=8080", ws_headers
            )
            await stream.aclose()
            assert status == 403
            assert len(up.seen) == before
            refused = [
                e for e in await rig.audit(user="user/vic") if e["action"] == "kube:portforward"
            ]
            assert [e["result"] for e in refused] == ["denied"]


async def test_revoking_the_certificate_ends_a_session(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            ann = await rig.user("ann", "admin")
            stream, status, _, rest = await upgrade(
                rig,
                ann,
                "POST",
                f"{POD}/attach",
                [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
                early=b"x",
            )
            async with stream:
                assert status == 101
                await read_until(stream, rest, b"echo:x")
                async with rig.labd.client(rig.admin) as http:
                    resp = await http.post("/api/users/ann/disable")
                    assert resp.status_code == 200, resp.text
                # labd ends the tunnel: the client reads EOF, the upstream is closed too.
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass  # closed without close_notify: an end all the same
            await up.wait_ended(2)
            start, end = sessions(await rig.audit(), "kube:attach")
            assert (start["details"]["phase"], end["details"]["ended_by"]) == ("start", "disabled")


async def test_a_watch_streams_and_either_side_ends_it(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            watch = "/k8s/s/api/v1/namespaces/default/pods?watch=true"
            ctx = rig.labd.ssl_context(rig.admin, alpn=["http/1.1"])
            tcp = await trio.open_tcp_stream(rig.labd.host, rig.labd.port)
            stream = trio.SSLStream(tcp, ctx, server_hostname=rig.labd.host)
            async with stream:
                await stream.send_all(f"GET {watch} HTTP/1.1\r\nHost: labd\r\n\r\n".encode())
                # The first event arrives while the watch is still open: nothing waits for
                # the end of the answer.
                head = await read_until(stream, b"", b"ADDED")
                assert head.startswith(b"HTTP/1.1 200")
            # The client left: labd closed its side toward the API server.
            await up.wait_ended(2)
            assert up.ended[1] == "eof"
            ended = await raw_request(rig.labd, rig.admin, "GET", watch + "&timeoutSeconds=0")
            assert ended.status == 200 and b"ADDED" in ended.body
            watches = [e for e in await rig.audit() if e["action"] == "kube:watch"]
            assert len(watches) == 2


@requires_kubectl
async def test_kubectl_exec_over_spdy(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            kc = rig.kubeconfig(rig.admin, cluster="s", namespace="default")
            out = await rig.kubectl(
                kc, "exec", "-i", "spdy", "--", "cat",
                stdin=b"over\nspdy\nexit 4\n",
                env={"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"},
            )  # fmt: skip
            assert out.returncode == 4, out.stderr
            assert out.stdout == b"ran: cat\nOVER\nSPDY\n"
            (request,) = [r for r in up.seen if "/pods/spdy/exec" in r["target"]]
            assert ("upgrade", "SPDY/3.1") in request["headers"]
            start, end = sessions(await rig.audit(), "kube:exec")
            assert start["details"]["protocol"] == "SPDY/3.1"
            assert end["details"]["bytes_up"] > 0 and end["details"]["bytes_down"] > 0


@pytest.mark.parametrize("websockets", ["false", "true"])
@requires_kubectl
async def test_kubectl_port_forward(tmp_path: Path, websockets: str) -> None:
    """SPDY/3.1 upgrade, and (kubectl's default since 1.31) SPDY tunnelled in a WebSocket."""
    with trio.fail_after(120):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            kc = rig.kubeconfig(rig.admin, cluster="s", namespace="default")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(rig.tmp / "home"),
                "KUBECONFIG": str(kc),
                "KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets,
            }
            argv = [KUBECTL, "port-forward", "pod/spdy", "0:8080"]
            proc = await trio.lowlevel.open_process(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
            )
            try:
                assert proc.stdout is not None
                said = b""
                while b"Forwarding from 127.0.0.1:" not in said:
                    chunk = await proc.stdout.receive_some(4096)
                    assert chunk, said
                    said += chunk
                port = int(said.split(b"Forwarding from 127.0.0.1:")[1].split(b" ")[0])
                for word in (b"first", b"second"):
                    conn = await trio.open_tcp_stream("127.0.0.1", port)
                    async with conn:
                        await conn.send_all(word)
                        assert await read_until(conn, b"", b"echo:" + word) == b"echo:" + word
            finally:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
            await up.wait_ended(len(up.seen))
            start, end = sessions(await rig.audit(), "kube:portforward")
            assert start["resource"] == "cluster/s/namespace/default/pods/spdy"
            assert end["details"]["bytes_up"] > len(b"firstsecond")
