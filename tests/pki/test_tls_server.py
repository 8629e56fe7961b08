"""lab.runtime.tls_server over real sockets: the client certificate reaches the ASGI scope."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from quart import jsonify, request, websocket
from quart_trio import QuartTrio

from lab import pki
from lab.errors import AddressInUse, ConfigError
from lab.runtime.tls_server import serve_asgi


def _describe(scope: dict[str, Any]) -> dict[str, Any]:
    tls = scope.get("extensions", {}).get("tls")
    if tls is None:
        return {"tls": False}
    der = tls["client_cert_der"]
    return {
        "tls": True,
        "name": tls["client_cert_name"],
        "chain": tls["client_cert_chain"],
        "identity": pki.identity_from_der(der).subject if der else None,
        "version": tls["tls_version"],
        "keys": sorted(tls),
    }


class Harness:
    def __init__(self) -> None:
        self.started = False
        self.stopped = False
        self.entered = trio.Event()
        self.release = trio.Event()
        self.app = QuartTrio(__name__)
        app = self.app

        @app.before_serving
        async def _up() -> None:
            self.started = True

        @app.after_serving
        async def _down() -> None:
            self.stopped = True

        @app.route("/whoami")
        async def whoami() -> Any:
            return jsonify({**_describe(request.scope), "lifespan": self.started})

        @app.route("/slow")
        async def slow() -> Any:
            self.entered.set()
            await self.release.wait()
            return "done"

        @app.websocket("/ws")
        async def ws() -> None:
            await websocket.send(json.dumps(_describe(websocket.scope)))


@pytest.fixture(scope="module")
def material(ca: pki.CAMaterial, other_ca: pki.CAMaterial) -> dict[str, bytes]:
    server_key = pki.generate_key()
    server_pem, _ = pki.issue_server_cert(ca, pki.make_csr(server_key, "labd"))
    user_key = pki.generate_key()
    user_pem, _ = pki.issue_user_cert(ca, pki.make_csr(user_key, "ann"), "ann")
    rogue_key = pki.generate_key()
    rogue_pem, _ = pki.issue_user_cert(other_ca, pki.make_csr(rogue_key, "x"), "admin")
    return {
        "bundle": pki.ca_bundle_pem([ca]),
        "server_cert": server_pem,
        "server_key": server_key,
        "user_cert": user_pem,
        "user_key": user_key,
        "rogue_cert": rogue_pem,
        "rogue_key": rogue_key,
    }


def _server_ctx(m: dict[str, bytes], client_auth: pki.ClientAuth = "optional") -> ssl.SSLContext:
    return pki.server_ssl_context(
        m["server_cert"], m["server_key"], m["bundle"], client_auth=client_auth
    )


@asynccontextmanager
async def running(
    app: Any, ssl_context: ssl.SSLContext | None, graceful_timeout: float = 2.0
) -> AsyncIterator[tuple[trio.Event, str]]:
    """Serve ``app`` on 127.0.0.1:0; always set shutdown and wait for serve_asgi to return."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            partial(
                serve_asgi,
                app,
                host="127.0.0.1",
                port=0,
                ssl_context=ssl_context,
                shutdown_event=shutdown,
                graceful_timeout=graceful_timeout,
            )
        )
        assert port != 0
        scheme = "https" if ssl_context else "http"
        try:
            yield shutdown, f"{scheme}://{host}:{port}"
        finally:
            shutdown.set()


async def test_client_cert_reaches_http_scope(material: dict[str, bytes]) -> None:
    harness = Harness()
    ctx = pki.client_ssl_context(
        material["bundle"], cert_pem=material["user_cert"], key_pem=material["user_key"]
    )
    with trio.fail_after(10):
        async with (
            running(harness.app, _server_ctx(material)) as (_, url),
            httpx.AsyncClient(verify=ctx) as client,
        ):
            body = (await client.get(f"{url}/whoami")).json()
            again = (await client.get(f"{url}/whoami")).json()  # same keep-alive connection
    assert body["tls"] is True
    assert body["identity"] == "user/ann"
    assert body["name"] == "CN=user/ann"
    assert body["lifespan"] is True
    assert body["version"] in (0x0303, 0x0304)
    assert body["keys"] == sorted(
        [
            "client_cert_chain",
            "client_cert_der",
            "client_cert_error",
            "client_cert_name",
            "cipher_suite",
            "server_cert",
            "tls_version",
        ]
    )
    [chain_pem] = body["chain"]
    assert pki.cert_info(chain_pem.encode()).subject == "user/ann"
    assert again == body
    assert harness.stopped, "lifespan shutdown did not run"


async def test_client_cert_over_h2(material: dict[str, bytes]) -> None:
    harness = Harness()
    ctx = pki.client_ssl_context(
        material["bundle"], cert_pem=material["user_cert"], key_pem=material["user_key"]
    )
    with trio.fail_after(10):
        async with (
            running(harness.app, _server_ctx(material)) as (_, url),
            httpx.AsyncClient(verify=ctx, http2=True) as client,
        ):
            response = await client.get(f"{url}/whoami")
    assert response.http_version == "HTTP/2"
    assert response.json()["identity"] == "user/ann"


async def test_no_client_cert_with_optional_auth(material: dict[str, bytes]) -> None:
    harness = Harness()
    ctx = pki.client_ssl_context(material["bundle"])
    with trio.fail_after(10):
        async with (
            running(harness.app, _server_ctx(material)) as (_, url),
            httpx.AsyncClient(verify=ctx) as client,
        ):
            body = (await client.get(f"{url}/whoami")).json()
    assert body["tls"] is True
    assert body["chain"] == []
    assert body["identity"] is None and body["name"] is None


async def test_required_auth_refuses_anonymous_and_foreign(material: dict[str, bytes]) -> None:
    harness = Harness()
    anonymous = pki.client_ssl_context(material["bundle"])
    rogue = pki.client_ssl_context(
        material["bundle"], cert_pem=material["rogue_cert"], key_pem=material["rogue_key"]
    )
    good = pki.client_ssl_context(
        material["bundle"], cert_pem=material["user_cert"], key_pem=material["user_key"]
    )
    with trio.fail_after(10):
        async with running(harness.app, _server_ctx(material, "required")) as (_, url):
            for ctx in (anonymous, rogue):
                async with httpx.AsyncClient(verify=ctx) as client:
                    with pytest.raises(httpx.TransportError):
                        await client.get(f"{url}/whoami")
            async with httpx.AsyncClient(verify=good) as client:
                assert (await client.get(f"{url}/whoami")).json()["identity"] == "user/ann"


async def test_websocket_sees_client_cert(material: dict[str, bytes]) -> None:
    harness = Harness()
    ctx = pki.client_ssl_context(
        material["bundle"],
        cert_pem=material["user_cert"],
        key_pem=material["user_key"],
        alpn=["http/1.1"],
    )
    with trio.fail_after(10):
        async with running(harness.app, _server_ctx(material)) as (_, url):
            ws_url = url.replace("https://", "wss://") + "/ws"
            async with trio_websocket.open_websocket_url(
                ws_url, ctx, connect_timeout=5, disconnect_timeout=5
            ) as conn:
                body = json.loads(await conn.get_message())
    assert body["tls"] is True
    assert body["identity"] == "user/ann"


async def test_plain_http_has_no_tls_extension() -> None:
    harness = Harness()
    with trio.fail_after(10):
        async with running(harness.app, None) as (_, url):
            assert url.startswith("http://")
            async with httpx.AsyncClient() as client:
                body = (await client.get(f"{url}/whoami")).json()
            async with trio_websocket.open_websocket_url(
                url.replace("http://", "ws://") + "/ws", connect_timeout=5, disconnect_timeout=5
            ) as conn:
                ws_body = json.loads(await conn.get_message())
    assert body == {"tls": False, "lifespan": True}
    assert ws_body == {"tls": False}


async def test_shutdown_lets_inflight_request_finish() -> None:
    harness = Harness()
    result: list[httpx.Response] = []
    done = trio.Event()
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            running(harness.app, None) as (shutdown, url),
            httpx.AsyncClient() as client,
        ):

            async def fetch() -> None:
                result.append(await client.get(f"{url}/slow"))
                done.set()

            nursery.start_soon(fetch)
            await harness.entered.wait()
            shutdown.set()
            harness.release.set()
            await done.wait()
    assert result[0].status_code == 200 and result[0].text == "done"
    assert harness.stopped


async def test_shutdown_cancels_hanging_request_after_grace() -> None:
    harness = Harness()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with running(harness.app, None, graceful_timeout=0.2) as (shutdown, url):
                client = httpx.AsyncClient()

                async def fetch() -> None:
                    async with client:
                        with pytest.raises(httpx.TransportError):
                            await client.get(f"{url}/slow")

                nursery.start_soon(fetch)
                await harness.entered.wait()
                shutdown.set()
            # serve_asgi returned (and ran lifespan shutdown) although the handler never
            # finished: the grace period ended and hypercorn cancelled it.
            assert harness.stopped
            assert not harness.release.is_set()


async def test_bind_failure_raises(material: dict[str, bytes]) -> None:
    with trio.fail_after(10):
        async with running(Harness().app, None) as (_, url):
            port = int(url.rsplit(":", 1)[1])
            with pytest.raises(AddressInUse, match=str(port)):
                await serve_asgi(
                    Harness().app, host="127.0.0.1", port=port, shutdown_event=trio.Event()
                )


def test_context_builders_reject_bad_material(material: dict[str, bytes]) -> None:
    with pytest.raises(ConfigError, match="together"):
        pki.client_ssl_context(material["bundle"], cert_pem=material["user_cert"])
    with pytest.raises(ConfigError, match="cannot be used"):
        pki.client_ssl_context(
            material["bundle"], cert_pem=material["user_cert"], key_pem=material["server_key"]
        )
    with pytest.raises(ConfigError, match="CA bundle"):
        pki.client_ssl_context(b"garbage")
    with pytest.raises(ConfigError, match="CA bundle is needed"):
        pki.server_ssl_context(material["server_cert"], material["server_key"], None)
    ctx = pki.server_ssl_context(
        material["server_cert"], material["server_key"], None, client_auth="none"
    )
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert _server_ctx(material, "required").verify_mode == ssl.CERT_REQUIRED


class Paced:
    """A raw ASGI app: sends its response head, then waits for ``release`` to send the body."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.head_sent = trio.Event()
        self.release = trio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        self.head_sent.set()
        await self.release.wait()
        await send({"type": "http.response.body", "body": b"hello", "more_body": False})


async def test_a_fixed_length_head_leaves_with_its_body() -> None:
    app = Paced([(b"content-length", b"5")])
    with trio.fail_after(10):
        async with running(app, None) as (_, url):
            host, port = url.removeprefix("http://").rsplit(":", 1)
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                await app.head_sent.wait()
                # The head waits for the body (one write, not two): nothing arrives meanwhile.
                with trio.move_on_after(0.3):
                    early = await stream.receive_some(65536)
                    pytest.fail(f"the head left alone: {early!r}")
                app.release.set()
                got = b""
                while not got.endswith(b"hello"):
                    got += await stream.receive_some(65536)
                assert got.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\nhello" in got


async def test_a_streamed_head_leaves_before_its_body() -> None:
    app = Paced([])  # no Content-Length: chunked, the head must not wait
    with trio.fail_after(10):
        async with running(app, None) as (_, url):
            host, port = url.removeprefix("http://").rsplit(":", 1)
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some(65536)
                assert not app.release.is_set()  # the body is not sent yet
                assert b"transfer-encoding: chunked" in head.lower()
                app.release.set()
                rest = head.partition(b"\r\n\r\n")[2]
                while not rest.endswith(b"0\r\n\r\n"):
                    rest += await stream.receive_some(65536)
                assert b"hello" in rest
