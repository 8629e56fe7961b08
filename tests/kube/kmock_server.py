"""A Kubernetes API server double for tests: kmock as its own process on 127.0.0.1, port 0.

::

    async with run_kube_api(tmp_path) as api:
        api.url          # https://127.0.0.1:PORT
        api.kubeconfig   # a kubeconfig text for it (token auth, its CA inline)

or the ``kube_api`` fixture of ``tests/kube/conftest.py`` (import it into another folder's
conftest with ``from tests.kube.conftest import kube_api``). The process is stopped when the
block ends, also when the test fails. See :mod:`tests.kube.kmock_app` for what it emulates.
"""

from __future__ import annotations

import base64
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import attrs
import trio
import yaml

from lab import pki
from lab.kube import KubeConnection, load_kubeconfig
from tests.e2e.daemons import Daemon, clean_env, start_daemon

ROOT = Path(__file__).parents[2]
DEFAULT_VERSION = "v1.31.4+k3s1"


@attrs.frozen
class KubeAPI:
    url: str
    ca_pem: bytes
    token: str
    client_cert_pem: bytes
    client_key_pem: bytes
    daemon: Daemon
    version: str

    def kubeconfig_text(
        self,
        *,
        auth: Literal["token", "cert"] = "token",
        name: str = "kmock",
        inline: bool = True,
        files_dir: Path | None = None,
    ) -> str:
        """A kubeconfig for this server; ``inline=False`` writes the PEMs to ``files_dir``."""
        cluster: dict[str, object] = {"server": self.url}
        user: dict[str, object] = {}
        if auth == "token":
            user["token"] = self.token
        pems = {"certificate-authority": self.ca_pem}
        if auth == "cert":
            pems |= {"client-certificate": self.client_cert_pem, "client-key": self.client_key_pem}
        for key, pem in pems.items():
            target = cluster if key == "certificate-authority" else user
            if inline:
                target[f"{key}-data"] = base64.b64encode(pem).decode()
            else:
                assert files_dir is not None
                (files_dir / f"{key}.pem").write_bytes(pem)
                target[key] = f"{key}.pem"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": f"{name}-admin", "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
            "current-context": name,
        }
        return yaml.safe_dump(doc, sort_keys=False)

    @property
    def kubeconfig(self) -> str:
        return self.kubeconfig_text()

    def connection(self) -> KubeConnection:
        return load_kubeconfig(self.kubeconfig)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@asynccontextmanager
async def run_kube_api(
    workdir: Path,
    *,
    version: str = DEFAULT_VERSION,
    nodes: Sequence[str] = ("node-1",),
    handler: str | None = None,
) -> AsyncIterator[KubeAPI]:
    """Start the double (``handler``: ``module:Class``, a subclass of LabKubeAPI)."""
    workdir = workdir / f"kmock-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True)
    ca = pki.create_ca("kmock cluster CA")
    server_key = pki.generate_key()
    server_cert, _ = pki.issue_server_cert(ca, pki.make_csr(server_key, "kmock"))
    client_key = pki.generate_key()
    client_cert, _ = pki.issue_user_cert(ca, pki.make_csr(client_key, "admin"), "admin")
    token = secrets.token_urlsafe(24)
    argv = [
        sys.executable,
        "-m",
        "tests.kube.kmock_app",
        "--cert",
        str(_write(workdir / "server.pem", server_cert)),
        "--key",
        str(_write(workdir / "server-key.pem", server_key)),
        "--client-ca",
        str(_write(workdir / "ca.pem", ca.cert_pem())),
        # One argument with '=': a token may start with '-' (token_urlsafe's alphabet has it).
        f"--token={token}",
        "--version",
        version,
    ]
    for node in nodes:
        argv += ["--node", node]
    if handler:
        argv += ["--handler", handler]
    env = clean_env(PYTHONPATH=str(ROOT))
    async with trio.open_nursery() as nursery:
        daemon, status = await start_daemon(nursery, "kmock", argv, env, workdir)
        try:
            yield KubeAPI(
                url=status,
                ca_pem=ca.cert_pem(),
                token=token,
                client_cert_pem=client_cert,
                client_key_pem=client_key,
                daemon=daemon,
                version=version,
            )
        finally:
            with trio.CancelScope(shield=True):
                await daemon.stop()
