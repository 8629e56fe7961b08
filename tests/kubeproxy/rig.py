"""A labd in-process with a cluster ``home`` (kmock, or any upstream) behind its /k8s proxy,
and real kubectl pointed at it with a user's own labd identity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import yaml

from lab.client.kubeconfig import proxy_kubeconfig
from lab.kube import KubeConnection
from tests.kube.kmock_server import KubeAPI
from tests.labd.harness import Credentials, RunningLabd, running_labd

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def _kubectl_minor() -> int | None:
    """The client's minor version (``kubectl version --client -o json``), None without one."""
    try:
        done = subprocess.run(
            [KUBECTL, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        minor = json.loads(done.stdout)["clientVersion"]["minor"]
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return None
    digits = "".join(c for c in str(minor) if c.isdigit())
    return int(digits) if digits else None


KUBECTL_MINOR = _kubectl_minor()
requires_kubectl = pytest.mark.skipif(
    KUBECTL_MINOR is None or KUBECTL_MINOR < 31,
    reason=f"needs kubectl >= 1.31 (WebSocket exec and port-forward); found "
    f"{'none' if KUBECTL_MINOR is None else f'1.{KUBECTL_MINOR}'} at {KUBECTL}",
)


@attrs.define
class ProxyRig:
    labd: RunningLabd
    admin: Credentials
    tmp: Path

    async def user(self, name: str, *roles: str) -> Credentials:
        async with self.labd.client(self.admin) as http:
            resp = await http.post("/api/users", json={"name": name, "roles": list(roles)})
        assert resp.status_code == 201, resp.text
        return await self.labd.enroll_user(name, resp.json()["token"])

    async def role(self, name: str, rules: list[tuple[str, str, str]], **extra: Any) -> None:
        permissions = [{"effect": e, "action": a, "resource": r} for e, a, r in rules]
        async with self.labd.client(self.admin) as http:
            resp = await http.post(
                "/api/roles", json={"name": name, "permissions": permissions, **extra}
            )
        assert resp.status_code == 201, resp.text

    def kubeconfig(
        self, creds: Credentials, cluster: str = "home", namespace: str | None = None
    ) -> Path:
        """The kubeconfig `labctl kubeconfig` writes, over ``creds``' own files."""
        who = creds.subject.replace("/", "-")
        directory = self.tmp / "identities" / who
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.pem").write_bytes(self.labd.ca_pem())
        (directory / "cert.pem").write_bytes(creds.cert_pem)
        key = directory / "key.pem"
        key.write_bytes(creds.key_pem)
        key.chmod(0o600)
        doc = proxy_kubeconfig(
            labd_url=self.labd.url,
            cluster=cluster,
            ca_file=directory / "ca.pem",
            cert_file=directory / "cert.pem",
            key_file=key,
            namespace=namespace,
        )
        path = directory / f"kubeconfig-{cluster}"
        path.write_text(yaml.safe_dump(doc))
        return path

    async def kubectl(
        self,
        kubeconfig: Path,
        *args: str,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp / "home"),
            "KUBECONFIG": str(kubeconfig),
            **(env or {}),
        }
        with trio.fail_after(timeout):
            return await trio.run_process(
                [KUBECTL, "--request-timeout=30s", *args],
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=environ,
            )

    async def audit(self, **params: str) -> list[dict[str, Any]]:
        async with self.labd.client(self.admin) as http:
            resp = await http.get("/api/audit", params={"limit": "1000", **params})
        assert resp.status_code == 200, resp.text
        items: list[dict[str, Any]] = resp.json()["items"]
        return items


@asynccontextmanager
async def proxy_rig(
    tmp_path: Path, clusters: Mapping[str, KubeAPI | Any], **settings: Any
) -> AsyncIterator[ProxyRig]:
    """labd with each of ``clusters`` (an API double, or a kubeconfig text) imported under its
    name (POST /api/clusters/import: the kubeconfig sealed in labd's store, where the proxy
    reads it)."""
    (tmp_path / "home").mkdir(exist_ok=True)
    async with running_labd(tmp_path, **settings) as labd:
        admin = await labd.admin()
        async with labd.client(admin) as http:
            for name, api in clusters.items():
                text = api if isinstance(api, str) else api.kubeconfig
                resp = await http.post(
                    "/api/clusters/import", json={"name": name, "kubeconfig": text}
                )
                assert resp.status_code == 201, resp.text
        yield ProxyRig(labd=labd, admin=admin, tmp=tmp_path)


async def upstream_requests(conn: KubeConnection) -> list[dict[str, Any]]:
    """What the recording kmock saw through the proxy (asked with the cluster's own
    credentials); the requests labd's own cluster client made (User-Agent labctl: the
    import's /version check, health) are left out."""
    from lab.labd.kubeproxy.upstream import ssl_context

    async with httpx.AsyncClient(verify=ssl_context(conn), timeout=15) as http:
        resp = await http.get(
            f"{conn.server}/_lab/requests", headers={"Authorization": f"Bearer {conn.token}"}
        )
    assert resp.status_code == 200, resp.text
    seen: list[dict[str, Any]] = resp.json()
    return [r for r in seen if ["User-Agent", "labctl"] not in r["headers"]]


@attrs.frozen
class RawAnswer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


async def raw_request(
    labd: RunningLabd,
    creds: Credentials | None,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> RawAnswer:
    """One HTTP/1.1 request with ``target`` sent exactly as written (no client-side
    normalization of ``..`` or percent-escapes, repeated headers kept)."""
    import h11

    ctx = labd.ssl_context(creds, alpn=["http/1.1"])
    tcp = await trio.open_tcp_stream(labd.host, labd.port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=labd.host)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        sent = [("Host", f"{labd.host}:{labd.port}"), *(headers or [])]
        if body:
            sent.append(("Content-Length", str(len(body))))
        data = conn.send(h11.Request(method=method, target=target, headers=sent))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        status, answer_headers, chunks = 0, [], []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status, answer_headers = event.status_code, list(event.headers.raw_items())
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    return RawAnswer(status=status, headers=answer_headers, body=b"".join(chunks))
