"""LabClient maps labd's answers and transport failures to lab.errors at the seam."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from lab import pki
from lab.client.api import (
    DOCTOR_HINT,
    LabClient,
    normalise_fingerprint,
    normalise_server,
)
from lab.errors import (
    Conflict,
    Invalid,
    LabError,
    NotFound,
    PermissionDenied,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from tests.cli_identity.fake_labd import FakeLabd, serving

Handler = Callable[[httpx.Request], httpx.Response]


def envelope(status: int, code: str, message: str, **details: Any) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return httpx.Response(status, json=body)


def client(handler: Handler) -> LabClient:
    return LabClient("https://labd.test:3100", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, Invalid),
        (401, Unauthenticated),
        (403, PermissionDenied),
        (404, NotFound),
        (409, Conflict),
        (413, TooLarge),
        (503, Unavailable),
        (500, LabError),
        (405, LabError),
    ],
)
async def test_status_maps_to_class_keeping_message_and_details(
    status: int, cls: type[LabError]
) -> None:
    async with client(lambda r: envelope(status, "x", "it went wrong", reason="why")) as c:
        with pytest.raises(LabError) as info:
            await c.get("/api/thing")
    assert type(info.value) is cls
    assert info.value.message == "it went wrong"
    assert info.value.details["reason"] == "why"


async def test_invalid_keeps_field_paths() -> None:
    resp = envelope(400, "invalid", "bad input", fields=["roles[0]"])
    async with client(lambda r: resp) as c:
        with pytest.raises(Invalid) as info:
            await c.post("/api/tokens", {"roles": [1]})
    assert info.value.details["fields"] == ["roles[0]"]


async def test_rate_limited_reads_retry_after_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        resp = envelope(429, "rate_limited", "slow down")
        resp.headers["Retry-After"] = "7"
        return resp

    async with client(handler) as c:
        with pytest.raises(RateLimited) as info:
            await c.post("/api/auth/enroll", {})
    assert info.value.retry_after == 7.0
    assert info.value.details["retry_after"] == 7.0


async def test_unauthenticated_gets_a_login_hint_unless_labd_gave_one() -> None:
    async with client(lambda r: envelope(401, "unauthenticated", "who are you")) as c:
        with pytest.raises(Unauthenticated) as info:
            await c.get("/api/auth/whoami")
    assert "labctl login" in info.value.details["hint"]
    resp = envelope(401, "unauthenticated", "token used", reason="used", hint="ask")
    async with client(lambda r: resp) as c:
        with pytest.raises(Unauthenticated) as info:
            await c.get("/api/auth/whoami")
    assert info.value.details["hint"] == "ask"


async def test_body_that_is_not_an_envelope() -> None:
    async with client(lambda r: httpx.Response(502, text="<html>bad gateway</html>")) as c:
        with pytest.raises(LabError) as info:
            await c.get("/api/tokens")
    assert "502" in info.value.message


async def test_success_returns_parsed_json_and_sends_json() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, str(request.url), body))
        return httpx.Response(200, json={"items": [1, 2]})

    async with client(handler) as c:
        assert await c.get("/api/certs", params={"subject": "user/ann"}) == {"items": [1, 2]}
        assert await c.post("/api/certs/revoke", {"target": "ab"}) == {"items": [1, 2]}
        assert await c.delete("/api/tokens/x") == {"items": [1, 2]}
        assert await c.put("/api/power/server/w", {"driver": "wol"}) == {"items": [1, 2]}
        assert await c.patch("/api/servers/w/labels", {"set": {}}) == {"items": [1, 2]}
    assert seen == [
        ("GET", "https://labd.test:3100/api/certs?subject=user%2Fann", None),
        ("POST", "https://labd.test:3100/api/certs/revoke", {"target": "ab"}),
        ("DELETE", "https://labd.test:3100/api/tokens/x", None),
        ("PUT", "https://labd.test:3100/api/power/server/w", {"driver": "wol"}),
        ("PATCH", "https://labd.test:3100/api/servers/w/labels", {"set": {}}),
    ]


@pytest.mark.parametrize("method", ["get", "put", "patch"])
async def test_success_that_is_not_json_is_unavailable(method: str) -> None:
    async with client(lambda r: httpx.Response(200, text="hello")) as c:
        call = getattr(c, method)
        with pytest.raises(Unavailable, match="not JSON") as info:
            await (call("/api/tokens") if method == "get" else call("/api/tokens", {}))
    assert info.value.details["hint"] == "is the server URL really labd?"


async def test_connection_refused_is_unavailable_with_doctor_hint() -> None:
    # A port that was just free: nothing listens there.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with trio.fail_after(10):
        async with LabClient(f"https://127.0.0.1:{port}", timeout=5) as c:
            with pytest.raises(Unavailable) as info:
                await c.get("/api/auth/whoami")
    assert info.value.details["hint"] == DOCTOR_HINT
    assert f"127.0.0.1:{port}" in info.value.message
    # The reason, not only trio's "all attempts to connect ... failed" (the bastion's labd
    # link logs this message too).
    assert "Connection refused" in info.value.message


async def test_timeout_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    async with client(handler) as c:
        with pytest.raises(Unavailable, match="timed out"):
            await c.get("/api/tokens")


async def test_server_from_another_ca_is_not_trusted(
    ca: pki.CAMaterial, rogue_ca: pki.CAMaterial
) -> None:
    fake = FakeLabd(ca)
    with trio.fail_after(10):
        async with serving(fake, tls_ca=rogue_ca) as url:
            ctx = pki.client_ssl_context(pki.ca_bundle_pem([ca]))
            async with LabClient(url, ssl_context=ctx) as c:
                with pytest.raises(Unauthenticated) as info:
                    await c.get("/api/auth/whoami")
    assert info.value.details["reason"] == "server_not_trusted"
    assert fake.requests == []


def test_normalise_server() -> None:
    assert normalise_server(" https://lab:3100/ ") == "https://lab:3100"
    for bad in ("http://lab:3100", "lab:3100", "https://", "ftp://x"):
        with pytest.raises(Invalid):
            normalise_server(bad)


def test_normalise_fingerprint() -> None:
    hexd = "ab" * 32
    expected = "SHA256:" + hexd
    assert normalise_fingerprint(expected) == expected
    assert normalise_fingerprint("sha256:" + hexd.upper()) == expected
    assert normalise_fingerprint(":".join(hexd[i : i + 2] for i in range(0, 64, 2))) == expected
    for bad in ("SHA256:abc", "MD5:" + hexd, "SHA256:" + "zz" * 32, ""):
        with pytest.raises(Invalid):
            normalise_fingerprint(bad)
