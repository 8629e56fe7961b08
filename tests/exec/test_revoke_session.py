"""Revoking a user's certificate or disabling the user ends its live exec sessions."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from lab.agent.daemon import run_agent
from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from lab.client.wsclient import StreamSession, StreamState, connect
from lab.errors import Unauthenticated
from lab.proto import Channel, CloseCode
from tests.exec.conftest import pid_alive
from tests.hub.hubtools import Labd, enroll_state, labd_with_hub, wait_process_gone
from tests.labd.harness import Credentials


@attrs.define
class Site:
    labd: Labd
    admin: Credentials
    user: Credentials
    home: Path

    async def post(self, path: str, body: dict[str, Any] | None = None) -> None:
        async with self.labd.running.client(self.admin) as http:
            resp = await http.post(path, json=body or {})
        assert resp.status_code == 200, resp.text

    def exec_ends(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(self.labd.running.data_dir / "labd.db")
        try:
            rows = db.execute(
                "SELECT user, result, details FROM audit WHERE action = 'exec:run' ORDER BY seq"
            ).fetchall()
        finally:
            db.close()
        entries = [{"user": u, "result": r, "details": json.loads(d)} for u, r, d in rows]
        return [e for e in entries if e["details"].get("phase") == "end"]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with labd_with_hub(tmp_path) as labd:
        admin = await labd.running.admin()
        token = await labd.running.create_token(admin, "user", user="ops", roles=["operator"])
        user = await labd.running.enroll_user("ops", token)
        home = tmp_path / "home-ops"
        save_credentials(
            home,
            CliCredentials(
                ca_pem=labd.running.ca_pem(), cert_pem=user.cert_pem, key_pem=user.key_pem
            ),
        )
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            settings = await enroll_state(labd.running, admin, "n1", tmp_path / "n1")
            agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
            with trio.fail_after(10):
                await agent.wait_connected()
            try:
                yield Site(labd=labd, admin=admin, user=user, home=home)
            finally:
                shutdown.set()


async def _discard(_: StreamState, channel: Channel, payload: bytes) -> None:
    pass


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        (("/api/certs/revoke", {"target": "user/ops"}), "revoked"),
        (("/api/users/ops/disable", None), "disabled"),
    ],
    ids=["revoke-cert", "disable-user"],
)
async def test_revocation_ends_a_live_exec(
    site: Site, how: tuple[str, dict[str, Any] | None], reason: str
) -> None:
    running = site.labd.running
    with trio.fail_after(15):
        async with connect(
            running.url, "/ws/exec", running.ssl_context(site.user, alpn=["http/1.1"])
        ) as ws:
            session = StreamSession(ws)
            (state,) = await session.open(
                "exec", {"targets": ["n1"], "start": {"argv": ["sleep", "60"]}}
            )
            while state.pid is None:
                assert await session.step(_discard)
            assert pid_alive(state.pid)
            assert len(site.labd.context.user_sessions) == 1

            await site.post(*how)
            with trio.fail_after(5):
                await session.run(_discard)
                await wait_process_gone(state.pid)
            assert ws.closed is not None
            assert ws.closed.code == CloseCode.REVOKED
    assert isinstance(state.error, Unauthenticated)
    assert state.exit is None
    assert len(site.labd.context.user_sessions) == 0
    (end,) = site.exec_ends()
    assert end["user"] == "user/ops" and end["result"] == "error"
    assert end["details"]["reason"] == reason and end["details"]["pid"] == state.pid


async def test_labctl_exec_exits_with_one_line_on_revocation(site: Site) -> None:
    env = {
        "LABCTL_HOME": str(site.home),
        "LABCTL_CONFIG": str(site.home / "config.yaml"),
        "LABCTL_SERVER": site.labd.running.url,
    }
    argv = ["exec", "server/n1", "--", "sh", "-c", "echo $$; exec sleep 60"]
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "lab.cli.main", *argv],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(64)
            pid = int(line)
            await site.post("/api/certs/revoke", {"target": "user/ops"})
            with trio.fail_after(5):
                code = await proc.wait()
                await wait_process_gone(pid)
            stderr = b""
            while chunk := await proc.stderr.receive_some(4096):
                stderr += chunk
        finally:
            proc.kill()
            await proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    await pipe.aclose()
    assert code == 3  # unauthenticated
    lines = stderr.decode().splitlines()
    assert lines == [
        "error: labd ended the session: certificate revoked",
        "hint: ask an admin for a new token, then run `labctl login`",
    ]
