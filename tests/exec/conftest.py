"""A real labd on loopback with a fake hub at the seam, a user identity and CLI helpers."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from lab.client.wsclient import StreamSession, connect
from lab.labd.relay import relay as streams
from tests.exec.fakehub import FakeHub
from tests.labd.harness import Credentials, RunningLabd, running_labd

ROOT = Path(__file__).resolve().parents[2]
ONLINE = {"alpha", "beta"}


@attrs.define
class Lab:
    labd: RunningLabd
    hub: FakeHub
    admin: Credentials
    home: Path
    tmp: Path

    def env(self, home: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LABCTL_HOME=str(home or self.home),
            LABCTL_CONFIG=str((home or self.home) / "config.yaml"),
            LABCTL_SERVER=self.labd.url,
        )
        return env

    def labctl(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "lab.cli.main", *args]

    async def user_home(self, name: str, roles: list[str]) -> tuple[Path, Credentials]:
        token = await self.labd.create_token(self.admin, "user", user=name, roles=roles)
        creds = await self.labd.enroll_user(name, token)
        home = self.tmp / f"home-{name}"
        save_credentials(
            home,
            CliCredentials(
                ca_pem=self.labd.ca_pem(), cert_pem=creds.cert_pem, key_pem=creds.key_pem
            ),
        )
        return home, creds

    def connect(self, path: str, creds: Credentials | None = None) -> Any:
        ctx = self.labd.ssl_context(creds or self.admin, alpn=["http/1.1"])
        return connect(self.labd.url, path, ctx)

    def audit(self, action: str) -> list[dict[str, Any]]:
        db = sqlite3.connect(self.labd.data_dir / "labd.db")
        try:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT user, action, resource, result, details FROM audit WHERE action = ?"
                " ORDER BY seq",
                (action,),
            ).fetchall()
        finally:
            db.close()
        return [dict(r) for r in rows]


@pytest.fixture
async def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Lab]:
    hub = FakeHub(online=ONLINE, sources={})
    monkeypatch.setattr(streams, "current_hub", lambda context: hub)
    async with running_labd(tmp_path) as labd:
        admin = await labd.admin()
        token = await labd.create_token(admin, "agent", reusable=True, max_uses=10)
        for name in (*sorted(ONLINE), "offline"):
            await labd.enroll_agent(name, token)
        home = tmp_path / "home"
        save_credentials(
            home,
            CliCredentials(ca_pem=labd.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem),
        )
        yield Lab(labd=labd, hub=hub, admin=admin, home=home, tmp=tmp_path)


async def open_exec(ws: Any, argv: list[str], *targets: str, **start: Any) -> StreamSession:
    session = StreamSession(ws)
    params = {"targets": list(targets), "start": {"argv": argv, **start}}
    await session.open("exec", params)
    return session


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
