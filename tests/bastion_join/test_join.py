"""A bastion joined to a real labd: one-time agent tokens in install.ks, what its certificate
may do, and the watchdog asking labd before it fails an install."""

from __future__ import annotations

import stat
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from lab import pki
from lab.agent.daemon import Agent, AgentSettings
from lab.agent.identity import enroll
from lab.bastion.jointokens import TokenBinding
from lab.bastion.labd_link import LabdLink, join, load_link, open_labd_link
from lab.bastion.service import Bastion
from lab.bastion.templates import Templates
from lab.errors import PermissionDenied, Unauthenticated
from lab.model import MachineState
from lab.store import open_store
from tests.bastion.conftest import Running, start_bastion
from tests.labd.harness import Credentials, RunningLabd, running_labd

MAC = "52:54:00:aa:00:01"


def fingerprint(labd: RunningLabd) -> str:
    return pki.load_ca_bundle(labd.ca_pem())[0].fingerprint()


async def join_bastion(labd: RunningLabd, admin: Credentials, data_dir: Path) -> LabdLink:
    token = await labd.create_token(admin, "user", user="pxe1", roles=["admin"])
    return await join(
        data_dir, labd.url, token, name="pxe1", ca_fingerprint=fingerprint(labd), tofu=False
    )


def enroll_yaml_of(kickstart: str) -> str:
    """The /etc/lab-agent/enroll.yaml an install writes (the here-document in %post)."""
    body = kickstart.split("cat > /etc/lab-agent/enroll.yaml <<'ENROLL'\n", 1)[1]
    return body.split("\nENROLL\n", 1)[0] + "\n"


def join_token_of(kickstart: str) -> str:
    line = next(x for x in enroll_yaml_of(kickstart).splitlines() if x.startswith("token: "))
    return line.removeprefix("token: ").strip()


async def queue_and_fetch_ks(bastion: Running, mac: str, hostname: str) -> str:
    resp = await bastion.install(mac, hostname=hostname)
    assert resp.status_code == 200, resp.text
    _, callback = await bastion.dispatch_token(mac)
    resp = await bastion.client.get("/kickstart/install.ks", params={"mac": mac, "token": callback})
    assert resp.status_code == 200, resp.text
    return resp.text


def operator_client(labd: RunningLabd, creds: Credentials, url: str) -> httpx.AsyncClient:
    """A client of a joined bastion's operator listener with a labd user's certificate.

    Like labctl: labd's CA must have signed the bastion's certificate, whose subject is checked
    (``bastion/...``) instead of a host name.
    """
    ctx = labd.ssl_context(creds)
    ctx.check_hostname = False
    return httpx.AsyncClient(base_url=url, verify=ctx, timeout=15)


@asynccontextmanager
async def joined(tmp_path: Path) -> AsyncIterator[tuple[RunningLabd, Credentials, Running]]:
    """labd, its admin, and an in-process bastion joined to it (data in tmp_path/data); the
    bastion's operator calls go to its TLS listener with the admin's labd certificate."""
    async with running_labd(tmp_path) as labd, trio.open_nursery() as nursery:
        admin = await labd.admin()
        await join_bastion(labd, admin, tmp_path / "data")
        serving = start_bastion(nursery, tmp_path)
        assert isinstance(serving, AsyncGenerator)
        bastion = await anext(serving)
        try:
            assert bastion.operator_url is not None
            async with operator_client(labd, admin, bastion.operator_url) as ops:
                bastion.ops = ops
                yield labd, admin, bastion
        finally:
            bastion.shutdown.set()  # stops the bastion even when the test failed
            await serving.aclose()


async def test_join_stores_identity_and_refuses_a_non_admin_token(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            viewer_token = await labd.create_token(admin, "user", user="pxe1", roles=["viewer"])
            with pytest.raises(PermissionDenied, match="admin role"):
                await join(
                    tmp_path / "b",
                    labd.url,
                    viewer_token,
                    name="pxe1",
                    ca_fingerprint=None,
                    tofu=True,
                )
            assert load_link(tmp_path / "b") is None
            wrong = "SHA256:" + ":".join(["00"] * 32)
            good = await labd.create_token(admin, "user", user="pxe1", roles=["admin"])
            with pytest.raises(Unauthenticated, match="fingerprint"):
                await join(
                    tmp_path / "b", labd.url, good, name="pxe1", ca_fingerprint=wrong, tofu=False
                )
            link = await join_bastion(labd, admin, tmp_path / "b")
            assert link.name == "pxe1" and link.server == labd.url
            assert load_link(tmp_path / "b") == link
            key = tmp_path / "b" / "labd" / "key.pem"
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            cert = pki.cert_info((tmp_path / "b" / "labd" / "cert.pem").read_bytes())
            assert cert.subject == "bastion/pxe1"


async def test_install_ks_carries_a_one_time_agent_token(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with joined(tmp_path) as (labd, admin, bastion):
            ks = await queue_and_fetch_ks(bastion, MAC, "node1")
            enroll_yaml = enroll_yaml_of(ks)
            assert f"server: {labd.url}" in enroll_yaml
            assert f"ca_fingerprint: {fingerprint(labd)}" in enroll_yaml
            token = join_token_of(ks)
            # What the installed machine's lab-agent.service runs before `lab-agent run`.
            config = tmp_path / "enroll.yaml"
            config.write_text(enroll_yaml)
            state = tmp_path / "agent-state"
            argv = [sys.executable, "-m", "lab.agent.main", "enroll", "--config", str(config)]
            argv += ["--state-dir", str(state), "--if-needed"]
            first = await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
            assert b"enrolled as server/node1" in first.stdout, first.stderr
            again_cli = await trio.run_process(argv, capture_stdout=True)
            assert b"already enrolled" in again_cli.stdout
            assert "ExecStartPre=/opt/lab-agent/bin/lab-agent enroll --config" in ks
            key = pki.generate_key()
            async with labd.client() as http:
                again = await http.post(
                    "/api/auth/enroll",
                    json={
                        "token": token,
                        "csr": pki.make_csr(key, "x").decode(),
                        "hostname": "node1",
                        "facts": {},
                    },
                )
                assert again.status_code == 401, again.text
                assert again.json()["error"]["details"]["reason"] == "used"
            async with labd.client(admin) as http:
                tokens = (await http.get("/api/tokens")).json()["items"]
            [made] = [t for t in tokens if t["created_by"] == "bastion/pxe1"]
            assert made["kind"] == "agent" and not made["reusable"]
            assert "node1" in made["description"]


def bastion_creds(data_dir: Path) -> Credentials:
    d = data_dir / "labd"
    return Credentials(
        key_pem=(d / "key.pem").read_bytes(),
        cert_pem=(d / "cert.pem").read_bytes(),
        subject="bastion/pxe1",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "user", "roles": ["admin"]},
        {"kind": "agent", "ttl_seconds": 2 * 86400, "hostname": "node1"},
        {"kind": "agent", "reusable": True, "hostname": "node1"},
        {"kind": "agent"},
        {"kind": "agent", "hostname": "node1", "replace": True},
    ],
    ids=["user-token", "ttl-over-a-day", "reusable", "unbound", "replace-unknown-server"],
)
async def test_a_bastion_certificate_is_limited(tmp_path: Path, body: dict[str, Any]) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await join_bastion(labd, admin, tmp_path / "data")
            async with labd.client(bastion_creds(tmp_path / "data")) as http:
                denied = await http.post("/api/tokens", json=body)
                assert denied.status_code == 403, denied.text
                assert denied.json()["error"]["details"]["reason"] == "bastion_limit"
                for path in ("/api/tokens", "/api/users", "/api/servers"):
                    resp = await http.get(path)
                    assert resp.status_code == 403, path
                    assert resp.json()["error"]["details"]["reason"] == "wrong_profile"
                ok = await http.post(
                    "/api/tokens", json={"kind": "agent", "ttl_seconds": 86400, "hostname": "n1"}
                )
                assert ok.status_code == 201, ok.text
                assert (await http.get("/api/servers/nope")).status_code == 404
            async with labd.client(admin) as http:
                audit = await http.get("/api/audit", params={"action": "tokens:create"})
            mine = [e for e in audit.json()["items"] if e["user"] == "bastion/pxe1"]
            assert [e["result"] for e in mine] == ["denied", "success"]
            assert mine[0]["details"]["reason"] == "bastion_limit"


class Clock:
    def __init__(self) -> None:
        from lab.model.records import now

        self.at = now()

    def __call__(self) -> Any:
        return self.at


async def test_watchdog_marks_an_online_agent_enrolled_not_failed(tmp_path: Path) -> None:
    """Two installs stall (their callbacks never come); one agent enrolled and is online."""
    with trio.fail_after(40):
        async with running_labd(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.admin()
            link = await join_bastion(labd, admin, tmp_path / "b")
            clock = Clock()
            store_url = f"sqlite:///{tmp_path / 'bastion.db'}"
            async with open_store(store_url) as store, open_labd_link(link) as source:
                b = Bastion(
                    store.machines,
                    store.settings,
                    Templates(base_url="http://127.0.0.1:8080", repo="http://mirror.test/os"),
                    join_tokens=source,
                    enrollment=source,
                    labd_url=labd.url,
                    clock=clock,
                )
                await b.start()
                tokens = {}
                for mac, name in ((MAC, "node1"), ("52:54:00:aa:00:02", "node2")):
                    body = {"mac": mac, "hostname": name, "role": "worker", "disk": "/dev/sda"}
                    await b.install(body)
                    script = await b.dispatch(mac)
                    callback = script.split("token=")[1].split()[0]
                    tokens[name] = join_token_of(await b.install_ks(mac, callback))

                state = tmp_path / "agent"
                await enroll(
                    labd.url,
                    tokens["node1"],
                    hostname="node1",
                    facts={},
                    ca_fingerprint=fingerprint(labd),
                    tofu=False,
                    state_dir=state,
                )
                agent = Agent(AgentSettings(state_dir=state, renew=False, connect_timeout=5))
                stop = trio.Event()
                await nursery.start(partial(agent.run, shutdown=stop))
                try:
                    await agent.wait_connected()
                    assert await source.agent_online("node1")
                    assert not await source.agent_online("node2")

                    clock.at += timedelta(hours=2)  # past the 20 min "boot" timeout
                    failed = await b.fail_stalled()
                finally:
                    stop.set()
                assert [m.hostname for m in failed] == ["node2"]
                one = await b.get(MAC)
                assert one.state is MachineState.ENROLLED and one.phase == "enrolled"
                assert "callbacks missed" in one.message
                two = await b.get("52:54:00:aa:00:02")
                assert two.state is MachineState.FAILED and two.phase == "boot"


async def test_labd_down_means_the_watchdog_fails_as_before(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            link = await join_bastion(labd, admin, tmp_path / "b")
        # labd has stopped: the link cannot answer, and the stalled install fails as before.
        clock = Clock()
        async with (
            open_store(f"sqlite:///{tmp_path / 'b.db'}") as store,
            open_labd_link(link, request_timeout=5) as source,
        ):
            b = Bastion(
                store.machines,
                store.settings,
                Templates(base_url="http://127.0.0.1:8080", repo="http://mirror.test/os"),
                enrollment=source,
                clock=clock,
            )
            await b.start()
            await b.install({"mac": MAC, "hostname": "node1", "role": "worker", "disk": "/dev/sda"})
            await b.dispatch(MAC)
            clock.at += timedelta(hours=2)
            [failed] = await b.fail_stalled()
            assert failed.state is MachineState.FAILED


async def test_http_with_bastion_cert_over_httpx(tmp_path: Path) -> None:
    """The mTLS client the bastion builds reaches labd with the bastion certificate."""
    with trio.fail_after(30):
        async with joined(tmp_path) as (labd, _admin, _bastion):
            link = load_link(tmp_path / "data")
            assert link is not None
            async with open_labd_link(link) as source:
                made = await source.create_agent_token(
                    TokenBinding(hostname="node9"), timedelta(hours=1)
                )
            assert made.token.count(".") == 1 and made.token.startswith(f"{made.id}.")
            async with httpx.AsyncClient(base_url=labd.url, verify=labd.ssl_context()) as http:
                health = await http.get("/healthz")
            assert health.status_code == 200
