"""Run a real labd in-process on 127.0.0.1:0 with real TLS, and make clients for it.

Usage in a trio test::

    async with running_labd(tmp_path) as labd:
        admin = await labd.enroll_user("ann", labd.bootstrap_token())
        async with labd.client(admin) as http:
            resp = await http.get("/api/tokens")
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from lab import pki
from lab.labd.config import LabdConfig
from lab.labd.context import LabdContext
from lab.labd.server import serve_labd


@attrs.frozen
class Credentials:
    """A client key and certificate issued by the labd under test."""

    key_pem: bytes
    cert_pem: bytes
    subject: str


@attrs.define
class RunningLabd:
    config: LabdConfig
    host: str
    port: int
    shutdown: trio.Event
    # The daemon's context (CA, store, hub): for tests that must reach inside.
    context: LabdContext | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.config.data_path

    def ca_pem(self) -> bytes:
        return (self.data_dir / "ca.pem").read_bytes()

    def bootstrap_token(self) -> str:
        return (self.data_dir / "bootstrap-token").read_text().strip()

    def ssl_context(
        self, creds: Credentials | None = None, *, alpn: list[str] | None = None
    ) -> ssl.SSLContext:
        if creds is None:
            return pki.client_ssl_context(self.ca_pem(), alpn=alpn)
        return pki.client_ssl_context(
            self.ca_pem(), cert_pem=creds.cert_pem, key_pem=creds.key_pem, alpn=alpn
        )

    def client(self, creds: Credentials | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.ssl_context(creds), timeout=15)

    async def enroll_user(self, username: str, token: str) -> Credentials:
        key = pki.generate_key()
        async with self.client() as http:
            resp = await http.post(
                "/api/auth/user-enroll",
                json={"token": token, "csr": pki.make_csr(key, "x").decode(), "username": username},
            )
        assert resp.status_code == 201, resp.text
        return Credentials(
            key_pem=key, cert_pem=resp.json()["certificate"].encode(), subject=f"user/{username}"
        )

    async def enroll_agent(
        self, hostname: str, token: str, facts: dict[str, Any] | None = None
    ) -> Credentials:
        key = pki.generate_key()
        async with self.client() as http:
            resp = await http.post(
                "/api/auth/enroll",
                json={
                    "token": token,
                    "csr": pki.make_csr(key, "x").decode(),
                    "hostname": hostname,
                    "facts": facts or {},
                },
            )
        assert resp.status_code == 201, resp.text
        return Credentials(
            key_pem=key, cert_pem=resp.json()["certificate"].encode(), subject=f"server/{hostname}"
        )

    async def create_token(self, admin: Credentials, kind: str, **extra: Any) -> str:
        async with self.client(admin) as http:
            resp = await http.post("/api/tokens", json={"kind": kind, **extra})
        assert resp.status_code == 201, resp.text
        token: str = resp.json()["token"]
        return token

    async def admin(self) -> Credentials:
        """Enroll (once per call) an admin user from the bootstrap token."""
        return await self.enroll_user("admin", self.bootstrap_token())


@asynccontextmanager
async def running_labd(tmp_path: Path, **settings: Any) -> AsyncIterator[RunningLabd]:
    # Tests make requests far faster than a person; they opt in to the limits they test.
    settings.setdefault("enroll_rate", 0.0)
    settings.setdefault("rate_global", 0.0)
    settings.setdefault("rate_tokens", 0.0)
    config = LabdConfig(host="127.0.0.1", port=0, data_dir=str(tmp_path / "labd"), **settings)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        contexts: list[LabdContext] = []
        host, port = await nursery.start(
            partial(serve_labd, config, shutdown=shutdown, on_context=contexts.append)
        )
        try:
            yield RunningLabd(
                config=config, host=host, port=port, shutdown=shutdown, context=contexts[0]
            )
        finally:
            shutdown.set()
