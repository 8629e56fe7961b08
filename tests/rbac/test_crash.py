"""kill -9 of a real labd process during a burst of audited requests loses no entry of any
request that was answered 2xx; after a restart the chain still verifies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio

from lab import pki
from tests.e2e.procs import free_port
from tests.labd.harness import Credentials
from tests.security.audit_rig import labd_process

BURST_CLIENTS = 8
KILL_AFTER = 60  # answered requests before the kill


def client(data: Path, port: int, creds: Credentials | None = None) -> httpx.AsyncClient:
    ca = (data / "ca.pem").read_bytes()
    ctx = (
        pki.client_ssl_context(ca, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
        if creds
        else pki.client_ssl_context(ca)
    )
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=15)


async def enroll_admin(data: Path, port: int) -> Credentials:
    key = pki.generate_key()
    token = (data / "bootstrap-token").read_text().strip()
    async with client(data, port) as http:
        resp = await http.post(
            "/api/auth/user-enroll",
            json={"token": token, "csr": pki.make_csr(key, "x").decode(), "username": "admin"},
        )
    assert resp.status_code == 201, resp.text
    return Credentials(key_pem=key, cert_pem=resp.json()["certificate"].encode(), subject="admin")


# httpx leaves the request body's async generator of a request cut by the kill to the garbage
# collector (a ResourceWarning); that is the client's business, not what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_kill_9_during_a_burst_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    data = tmp_path / "labd"
    port = free_port()
    acknowledged: list[str] = []
    with trio.fail_after(120):
        async with labd_process(data, port) as proc:
            admin = await enroll_admin(data, port)
            enough = trio.Event()

            async def burst(worker: int) -> None:
                async with client(data, port, admin) as http:
                    for i in range(10_000):
                        rid = f"w{worker}-{i}"
                        body = {"name": f"r-{worker}-{i}"}
                        try:
                            resp = await http.post(
                                "/api/roles", json=body, headers={"X-Request-Id": rid}
                            )
                        except httpx.TransportError:
                            return  # labd is gone
                        if resp.is_success:
                            acknowledged.append(rid)
                            if len(acknowledged) >= KILL_AFTER:
                                enough.set()

            async with trio.open_nursery() as nursery:
                for w in range(BURST_CLIENTS):
                    nursery.start_soon(burst, w)
                await enough.wait()
                os.kill(proc.pid, signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        assert len(acknowledged) >= KILL_AFTER

        async with labd_process(data, port), client(data, port, admin) as http:
            found: set[str] = set()
            after = 0
            while True:
                page = (
                    await http.get(
                        "/api/audit",
                        params={"action": "roles:create", "after_seq": str(after)},
                    )
                ).json()
                found |= {e["details"].get("request_id") for e in page["items"]}
                if not page["items"]:
                    break
                after = page["last_seq"]
            verdict = (await http.get("/api/audit/verify")).json()
            roles = {r["name"] for r in (await http.get("/api/roles")).json()["items"]}
        missing = sorted(set(acknowledged) - found)
        assert not missing, (
            f"{len(missing)} acknowledged requests have no audit entry: {missing[:5]}"
        )
        assert verdict["ok"] is True, verdict
        # every acknowledged role exists too (the entry was written after the change)
        assert {"r-" + rid.removeprefix("w") for rid in acknowledged} <= roles
