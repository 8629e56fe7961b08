from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from lab.bastion.config import BastionConfig
from lab.bastion.server import serve_bastion
from lab.bastion.service import JoinTokenSource

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@lab"

INVENTORY: dict[str, Any] = {
    "mac": "52:54:00:12:34:56",
    "system": {"vendor": "QEMU", "product": "Standard PC", "serial": "S1"},
    "firmware": "uefi",
    "cpu": {"model": "x86", "sockets": 1, "cores": 4, "threads": 8},
    "memory_bytes": 8 * 2**30,
    "disks": [
        {
            "name": "/dev/sda",
            "model": "QEMU HARDDISK",
            "size_bytes": 2**36,
            "serial": "D1",
            "rotational": False,
        }
    ],
    "nics": [
        {
            "name": "eth0",
            "mac": "52-54-00-12-34-56",
            "driver": "virtio_net",
            "speed_mbps": 1000,
            "link": True,
        }
    ],
}


@attrs.define
class Running:
    url: str
    data_dir: Path
    admin_token: str
    client: httpx.AsyncClient
    shutdown: trio.Event
    # https://HOST:PORT of the operator listener of a joined bastion (None when standalone).
    operator_url: str | None = None
    # The client operator calls go through: ``client`` with the admin token (standalone), or
    # a client of the operator listener with a labd user's certificate (joined, see
    # tests.bastion_join.test_join.joined).
    ops: httpx.AsyncClient | None = None

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"} if self.ops is None else {}

    @property
    def operator(self) -> httpx.AsyncClient:
        return self.client if self.ops is None else self.ops

    async def discovery_token(self) -> str:
        script = (await self.client.get("/dispatch", params={"mac": "02:00:00:00:00:01"})).text
        return script.split("token=")[1].split()[0]

    async def install(self, mac: str, **kw: Any) -> httpx.Response:
        body = {"mac": mac, "hostname": "node1", "role": "worker", "disk": "/dev/sda", **kw}
        return await self.operator.post("/api/install", json=body, headers=self.admin)

    async def dispatch_token(self, mac: str) -> tuple[str, str]:
        """Dispatch an install; return (script, callback token)."""
        script = (await self.client.get("/dispatch", params={"mac": mac})).text
        return script, script.split("token=")[1].split()[0]

    async def progress(self, token: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/api/progress", json=body, headers={"Authorization": f"Bearer {token}"}
        )


async def start_bastion(
    nursery: trio.Nursery,
    tmp_path: Path,
    *,
    join_tokens: JoinTokenSource | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    overrides.setdefault("operator_port", 0)
    config = BastionConfig(
        host="127.0.0.1",
        port=0,
        data_dir=str(tmp_path / "data"),
        repo="http://mirror.test/fedora/42/os",
        **overrides,
    )
    shutdown = trio.Event()
    listeners: dict[str, tuple[str, int]] = {}

    async def run(task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        await serve_bastion(
            config,
            shutdown_event=shutdown,
            join_tokens=join_tokens,
            listening=listeners.__setitem__,
            task_status=task_status,
        )

    with trio.fail_after(10):
        host, port = await nursery.start(run)
    url = f"http://{host}:{port}"
    token = (tmp_path / "data" / "admin-token").read_text().strip()
    operator = listeners.get("operator")
    operator_url = f"https://{operator[0]}:{operator[1]}" if operator else None
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield Running(url, tmp_path / "data", token, client, shutdown, operator_url)
    shutdown.set()


@pytest.fixture
async def bastion(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in start_bastion(nursery, tmp_path):
        yield running
