"""labd and lab-bastion as real processes on loopback, and raw TLS/TCP clients for abuse tests.

The daemons run as subprocesses (so their open file descriptors can be counted from /proc)
through :mod:`tests.e2e.daemons`, which stops them even when a test fails.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio

from lab import pki
from tests.e2e.daemons import Daemon, clean_env, labd_env, port_of, start_daemon
from tests.labd.harness import Credentials


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@attrs.define
class LabdProcess:
    daemon: Daemon
    data_dir: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def log_text(self) -> str:
        return self.daemon.log.read_text(errors="replace")

    def ca_pem(self) -> bytes:
        return (self.data_dir / "ca.pem").read_bytes()

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

    async def admin(self) -> Credentials:
        token = (self.data_dir / "bootstrap-token").read_text().strip()
        key = pki.generate_key()
        async with self.client() as http:
            resp = await http.post(
                "/api/auth/user-enroll",
                json={"token": token, "csr": pki.make_csr(key, "x").decode(), "username": "admin"},
            )
        assert resp.status_code == 201, resp.text
        return Credentials(
            key_pem=key, cert_pem=resp.json()["certificate"].encode(), subject="user/admin"
        )

    async def metric(self, admin: Credentials, name: str, labels: str = "") -> float:
        async with self.client(admin) as http:
            resp = await http.get("/metrics")
        assert resp.status_code == 200, resp.text
        return metric_value(resp.text, name, labels)


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of sample ``name{labels}`` in a Prometheus text exposition (0 if absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


@asynccontextmanager
async def running_labd_process(tmp_path: Path, **env: str) -> AsyncIterator[LabdProcess]:
    """A labd subprocess on 127.0.0.1 (rate limits off unless ``env`` sets them)."""
    data = tmp_path / "labd"
    async with trio.open_nursery() as nursery:
        daemon, status = await start_daemon(
            nursery,
            "labd",
            [sys.executable, "-m", "lab.labd.main"],
            labd_env(data, 0, **env),
            tmp_path,
        )
        try:
            yield LabdProcess(daemon=daemon, data_dir=data, port=port_of(status))
        finally:
            with trio.CancelScope(shield=True):
                await daemon.stop()
            nursery.cancel_scope.cancel()


@attrs.define
class BastionProcess:
    daemon: Daemon
    data_dir: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def admin_headers(self) -> dict[str, str]:
        token = (self.data_dir / "admin-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def log_text(self) -> str:
        return self.daemon.log.read_text(errors="replace")


@asynccontextmanager
async def running_bastion_process(tmp_path: Path, **env: str) -> AsyncIterator[BastionProcess]:
    """A lab-bastion subprocess serving HTTP only on 127.0.0.1 (no DHCP)."""
    data = tmp_path / "bastion"
    argv = [sys.executable, "-c", "from lab.bastion.main import main; main()"]
    argv += ["serve", "--no-dhcp", "--port", "0", "--data-dir", str(data)]
    environ = clean_env(
        LAB_BASTION_HOST="127.0.0.1", LAB_BASTION_REPO="http://mirror.test/fedora/42/os", **env
    )
    async with trio.open_nursery() as nursery:
        daemon, status = await start_daemon(nursery, "lab-bastion", argv, environ, tmp_path)
        try:
            yield BastionProcess(daemon=daemon, data_dir=data, port=port_of(status))
        finally:
            with trio.CancelScope(shield=True):
                await daemon.stop()
            nursery.cancel_scope.cancel()


async def tls_connect(
    host: str, port: int, context: ssl.SSLContext
) -> trio.SSLStream[trio.SocketStream]:
    """A finished TLS handshake with ``context`` (HTTP/1.1)."""
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), context, server_hostname=host)
    await stream.do_handshake()
    return stream


async def http_get(stream: trio.abc.Stream, path: str, **headers: str) -> bytes:
    """Send one keep-alive GET and read its whole answer (Content-Length framed)."""
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: labctl\r\n{extra}\r\n".encode())
    return await read_response(stream)


async def read_response(stream: trio.abc.Stream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError(f"connection closed mid-response: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError("connection closed mid-body")
        rest += chunk
    return head + b"\r\n\r\n" + rest


async def wait_eof(stream: trio.abc.Stream) -> bytes:
    """Read until the server closes; what arrived before the end."""
    data = b""
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return data
        if not chunk:
            return data
        data += chunk


def headers_of(response: bytes) -> dict[str, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])
