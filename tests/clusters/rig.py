"""A lab for cluster operations: a real labd, real lab-agent processes (one per node, all on
this machine), and per node a root directory and a bin directory holding the stand-in
``systemctl`` (first on the node's PATH through ``cluster_exec_path``). The stand-in k3s is
an artifact, so the real stage step installs it.

Secrets and artifacts are labd's own stores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from lab.agent.executor import BASE_PATH
from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from tests.e2e.daemons import Daemon, clean_env, start_daemon
from tests.hub.hubtools import enroll_state
from tests.labd.harness import Credentials, RunningLabd, running_labd

ROOT = Path(__file__).parents[2]
V1 = "v1.31.4+k3s1"
V2 = "v1.32.1+k3s1"


def k3s_program(version: str, record: Path, *, rogue_ca: bool = False) -> bytes:
    return (
        f"#!{sys.executable}\n"
        f"# stand-in k3s {version} (tests/clusters/standin_k3s.py)\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.clusters.standin_k3s import main\n"
        f"main(version={version!r}, record_to={str(record)!r}, rogue_ca={rogue_ca!r})\n"
    ).encode()


def systemctl_program(root: Path, record: Path) -> str:
    return (
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.clusters.standin_systemctl import main\n"
        f"main(root={str(root)!r}, record_to={str(record)!r})\n"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class ClusterLab:
    labd: RunningLabd
    admin: Credentials
    tmp: Path
    record: Path
    agents: dict[str, Daemon] = attrs.Factory(dict)
    nursery: trio.Nursery | None = None

    def root(self, node: str) -> Path:
        return self.tmp / "nodes" / node / "root"

    async def secret(self, name: str) -> bytes:
        assert self.labd.context is not None
        return await self.labd.context.secrets.get(name)

    async def add_artifact(self, name: str, version: str, arch: str, data: bytes) -> None:
        assert self.labd.context is not None

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        await self.labd.context.artifacts.add(
            name, version, arch, chunks(), created_by=self.admin.subject
        )

    async def secret_names(self) -> list[str]:
        assert self.labd.context is not None
        return await self.labd.context.secrets.names()

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    async def http(self) -> httpx.AsyncClient:
        return self.labd.client(self.admin)

    async def wait_op(self, client: httpx.AsyncClient, cluster: str, op_id: str) -> dict[str, Any]:
        """The operation once it ended (polled: the engine runs it in the background)."""
        while True:
            resp = await client.get(f"/api/clusters/{cluster}/operations/{op_id}")
            assert resp.status_code == 200, resp.text
            op: dict[str, Any] = resp.json()
            if op["status"] in ("succeeded", "failed"):
                return op
            await trio.sleep(0.2)

    async def start_agent(self, nursery: trio.Nursery, node: str) -> None:
        """(Re)start ``node``'s lab-agent and wait until labd sees it online."""
        env = clean_env(LAB_AGENT_STATE_DIR=str(self.tmp / "agents" / node))
        argv = [sys.executable, "-m", "lab.agent.main", "run"]
        self.agents[node], _ = await start_daemon(nursery, f"agent-{node}", argv, env, self.tmp)
        async with self.labd.client(self.admin) as client:
            while (await client.get(f"/api/servers/{node}")).json().get("status") != "online":
                await trio.sleep(0.1)

    async def kill_agent(self, node: str) -> None:
        """SIGKILL ``node``'s lab-agent (its commands die with it) and reap it."""
        daemon = self.agents[node]
        with suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
        await daemon.stop()

    async def labctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """Run labctl as the admin against this labd."""
        home = self.tmp / "labctl-home"
        if not home.exists():
            save_credentials(
                home,
                CliCredentials(
                    ca_pem=self.labd.ca_pem(),
                    cert_pem=self.admin.cert_pem,
                    key_pem=self.admin.key_pem,
                ),
            )
        env = {
            **clean_env(),
            "LABCTL_HOME": str(home),
            "LABCTL_CONFIG": str(home / "config.yaml"),
            "LABCTL_SERVER": self.labd.url,
        }
        return await trio.run_process(
            [sys.executable, "-m", "lab.cli.main", *args],
            env=env, capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip

    def stop_k3s(self) -> None:
        """Stop every stand-in k3s the stand-in systemctl started (also when a test fails)."""
        for pidfile in (self.tmp / "nodes").glob("*/root/run/*.pid"):
            with suppress(ProcessLookupError, ValueError):
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)


@asynccontextmanager
async def cluster_lab(
    tmp_path: Path, nodes: list[str], *, standins: bool = True, **settings: Any
) -> AsyncIterator[ClusterLab]:
    """The lab; ``standins=False`` runs on this machine's own PATH and root (a real k3s)."""
    record = tmp_path / "calls.jsonl"
    for node in nodes if standins else []:
        bindir = tmp_path / "nodes" / node / "bin"
        bindir.mkdir(parents=True)
        (tmp_path / "nodes" / node / "root").mkdir()
        stub = bindir / "systemctl"
        stub.write_text(systemctl_program(tmp_path / "nodes" / node / "root", record))
        stub.chmod(0o755)
    if standins:
        settings.setdefault("cluster_exec_path", f"{tmp_path}/nodes/{{node}}/bin:{BASE_PATH}")
        settings.setdefault("cluster_node_root", f"{tmp_path}/nodes/{{node}}/root")
    settings.setdefault("cluster_ready_timeout", 60.0)
    async with running_labd(tmp_path / "labd", **settings) as labd, trio.open_nursery() as nursery:
        lab = ClusterLab(
            labd=labd,
            admin=await labd.admin(),
            tmp=tmp_path,
            record=record,
        )
        try:
            lab.nursery = nursery
            for node in nodes:
                await enroll_state(labd, lab.admin, node, tmp_path / "agents" / node)
            async with trio.open_nursery() as starting:  # agents start side by side
                for node in nodes:
                    starting.start_soon(lab.start_agent, nursery, node)
            yield lab
        finally:
            with trio.CancelScope(shield=True):
                lab.stop_k3s()
                for daemon in lab.agents.values():
                    await daemon.stop()
            nursery.cancel_scope.cancel()
