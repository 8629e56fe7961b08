"""A stand-in for labd's identity routes, served over real TLS (hypercorn, loopback, port 0).

It follows labd's JSON contract for the routes the identity client uses, signs with a real
test CA, and records every request so tests can prove a token was (or was never) sent.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from lab import pki
from lab.errors import LabError, Unauthenticated
from lab.runtime.tls_server import serve_asgi


class FakeLabd:
    def __init__(self, ca: pki.CAMaterial, *, served_bundle: bytes | None = None) -> None:
        self.ca = ca
        self.bundle = pki.ca_bundle_pem([ca])
        # What GET /api/ca answers (a man in the middle may append his own CA).
        self.served_bundle = served_bundle or self.bundle
        self.tokens = {"good-user": ("user", ["admin"]), "good-agent": ("agent", [])}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.app = self._build()

    def _peer(self) -> pki.PeerIdentity:
        tls = request.scope.get("extensions", {}).get("tls") or {}
        der = tls.get("client_cert_der")
        if not der:
            raise Unauthenticated("a client certificate is required", details={"reason": "none"})
        return pki.identity_from_der(der, [self.ca])

    def _take_token(self, token: str, kind: str) -> list[str]:
        entry = self.tokens.get(token)
        if entry is None or entry[0] != kind:
            raise Unauthenticated("join token is not valid", details={"reason": "bad_token"})
        del self.tokens[token]
        return entry[1]

    def _build(self) -> QuartTrio:
        app = QuartTrio(__name__)

        @app.errorhandler(LabError)
        async def _lab_error(exc: LabError) -> Any:
            return jsonify(exc.envelope()), exc.status

        @app.before_request
        async def _record() -> None:
            body = await request.get_json(silent=True)
            self.requests.append((f"{request.method} {request.path}", body or {}))

        @app.get("/api/ca")
        async def ca() -> Any:
            return Response(self.served_bundle, mimetype="application/x-pem-file")

        @app.post("/api/auth/user-enroll")
        async def user_enroll() -> Any:
            body = await request.get_json()
            roles = self._take_token(body["token"], "user")
            cert, _ = pki.issue_user_cert(self.ca, body["csr"].encode(), body["username"])
            return jsonify(
                certificate=cert.decode(),
                ca_bundle=self.bundle.decode(),
                user=body["username"],
                roles=roles,
                ca_fingerprint=self.ca.fingerprint(),
            ), 201

        @app.post("/api/auth/enroll")
        async def enroll() -> Any:
            body = await request.get_json()
            self._take_token(body["token"], "agent")
            cert, _ = pki.issue_agent_cert(self.ca, body["csr"].encode(), body["hostname"])
            return jsonify(
                certificate=cert.decode(),
                ca_bundle=self.bundle.decode(),
                server_id="srv-" + secrets.token_hex(4),
                server_name=body["hostname"],
                ca_fingerprint=self.ca.fingerprint(),
            ), 201

        @app.post("/api/auth/renew")
        async def renew() -> Any:
            peer = self._peer()
            body = await request.get_json()
            issue = pki.issue_agent_cert if peer.kind == "server" else pki.issue_user_cert
            cert, _ = issue(self.ca, body["csr"].encode(), peer.name)
            return jsonify(certificate=cert.decode(), ca_bundle=self.bundle.decode())

        @app.get("/api/auth/whoami")
        async def whoami() -> Any:
            peer = self._peer()
            return jsonify(
                kind=peer.kind,
                name=peer.name,
                roles=["admin"],
                serial=peer.serial,
                not_after=peer.not_after.isoformat(),
            )

        return app

    def sent(self, path: str) -> list[dict[str, Any]]:
        return [body for what, body in self.requests if what.endswith(" " + path)]


def server_context(ca: pki.CAMaterial) -> Any:
    key = pki.generate_key()
    cert, _ = pki.issue_server_cert(ca, pki.make_csr(key, "labd"))
    return pki.server_ssl_context(cert, key, pki.ca_bundle_pem([ca]), client_auth="optional")


@asynccontextmanager
async def serving(fake: FakeLabd, tls_ca: pki.CAMaterial | None = None) -> AsyncIterator[str]:
    """Serve ``fake`` on https://127.0.0.1:PORT with a server cert from ``tls_ca``."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            partial(
                serve_asgi,
                fake.app,
                host="127.0.0.1",
                port=0,
                ssl_context=server_context(tls_ca or fake.ca),
                shutdown_event=shutdown,
                graceful_timeout=1.0,
            )
        )
        try:
            yield f"https://{host}:{port}"
        finally:
            shutdown.set()
