"""A bastion joined to labd takes labd users' certificates on its operator API, and labd's RBAC
decides (``provision:*`` on ``machine/...``); its admin token is then refused.

Before, a joined bastion still took only its admin token, a bearer secret that anyone who read
the file (or the LAN traffic to port 8080) held with every right, outside RBAC and the audit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from lab.client import credentials
from tests.bastion_join.test_join import joined, operator_client
from tests.labd.harness import Credentials, RunningLabd

MAC = "52:54:00:aa:00:01"
INSTALL = {"mac": MAC, "hostname": "node1", "role": "worker", "disk": "/dev/sda"}


async def user(labd: RunningLabd, admin: Credentials, name: str, role: str) -> Credentials:
    token = await labd.create_token(admin, "user", user=name, roles=[role])
    return await labd.enroll_user(name, token)


async def audit_checks(labd: RunningLabd, admin: Credentials) -> list[dict[str, Any]]:
    async with labd.client(admin) as http:
        resp = await http.get("/api/audit", params={"action": "auth:check"})
    return [e for e in resp.json()["items"] if e["user"] == "bastion/pxe1"]


async def test_labd_users_and_rbac_on_a_joined_bastion(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with joined(tmp_path) as (labd, admin, bastion):
            assert bastion.operator_url is not None
            operator = await user(labd, admin, "olga", "operator")
            viewer = await user(labd, admin, "vic", "viewer")

            async with operator_client(labd, operator, bastion.operator_url) as ops:
                assert (await ops.get("/api/machines")).status_code == 200
                resp = await ops.post("/api/install", json=INSTALL)
                assert resp.status_code == 200, resp.text
                assert (await ops.get("/api/logs", params={"lines": 5})).status_code == 200

            async with operator_client(labd, viewer, bastion.operator_url) as ops:
                listed = await ops.get("/api/machines")
                assert listed.status_code == 200
                assert [m["mac"] for m in listed.json()["items"]] == [MAC]
                assert (await ops.get(f"/api/machines/{MAC}")).status_code == 200
                for method, path, body in (
                    ("POST", "/api/install", {**INSTALL, "mac": "52:54:00:aa:00:02"}),
                    ("POST", "/api/reprovision", {"mac": MAC}),
                    ("DELETE", f"/api/machines/{MAC}", None),
                    ("GET", "/api/logs", None),
                ):
                    resp = await ops.request(method, path, json=body)
                    assert resp.status_code == 403, (path, resp.text)
                    details = resp.json()["error"]["details"]
                    assert "vic" in resp.json()["error"]["message"]
                    assert details["reason"].startswith("denied")

            # labd answered each question and audited it, with the user and the answer.
            checks = await audit_checks(labd, admin)
            asked = {(e["details"]["user"], e["details"]["action"]) for e in checks}
            assert ("olga", "provision:install") in asked and ("vic", "provision:forget") in asked
            denied = [e for e in checks if e["details"]["allowed"] is False]
            assert {e["details"]["user"] for e in denied} == {"vic"}
            assert any(e["details"]["resource"] == f"machine/{MAC}" for e in denied)


async def test_the_admin_token_is_refused_once_joined(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with joined(tmp_path) as (labd, _admin, bastion):
            token = {"Authorization": f"Bearer {bastion.admin_token}"}
            for path in ("/api/machines", "/api/logs", "/metrics"):
                resp = await bastion.client.get(path, headers=token)
                assert resp.status_code == 401, (path, resp.text)
                assert resp.json()["error"]["details"]["reason"] == "joined"
            resp = await bastion.client.post("/api/install", json=INSTALL, headers=token)
            assert resp.status_code == 401
            # On the TLS listener, a connection without a certificate is no better.
            assert bastion.operator_url is not None
            ctx = labd.ssl_context()
            ctx.check_hostname = False
            async with httpx.AsyncClient(base_url=bastion.operator_url, verify=ctx) as anon:
                resp = await anon.get("/api/machines", headers=token)
            assert resp.status_code == 401
            # The installer's routes stay where they were, on plain HTTP.
            assert (await bastion.client.get("/dispatch", params={"mac": MAC})).status_code == 200


async def test_a_revoked_user_or_an_agent_certificate_gets_nothing(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with joined(tmp_path) as (labd, admin, bastion):
            assert bastion.operator_url is not None
            operator = await user(labd, admin, "olga", "operator")
            agent = await labd.enroll_agent(
                "node5", await labd.create_token(admin, "agent", hostname="node5")
            )
            async with operator_client(labd, agent, bastion.operator_url) as ops:
                resp = await ops.get("/api/machines")
                assert resp.status_code == 403
                assert resp.json()["error"]["details"]["reason"] == "wrong_profile"
            async with operator_client(labd, operator, bastion.operator_url) as ops:
                assert (await ops.get("/api/machines")).status_code == 200
                async with labd.client(admin) as http:
                    resp = await http.post("/api/certs/revoke", json={"target": "user/olga"})
                    assert resp.status_code == 200, resp.text
                resp = await ops.get("/api/machines")
                assert resp.status_code == 403, resp.text
                assert "revoked" in resp.json()["error"]["details"]["reason"]


async def test_labctl_provision_uses_its_labd_identity(tmp_path: Path) -> None:
    """labctl against a joined bastion's https URL: no token file, the user's certificate."""
    with trio.fail_after(90):
        async with joined(tmp_path) as (labd, admin, bastion):
            assert bastion.operator_url is not None
            operator = await user(labd, admin, "olga", "operator")
            home = tmp_path / "labctl-home"
            credentials.save_credentials(
                home,
                credentials.Credentials(
                    ca_pem=labd.ca_pem(), cert_pem=operator.cert_pem, key_pem=operator.key_pem
                ),
            )
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "LAB_"))},
                "LABCTL_HOME": str(home),
                "LABCTL_BASTION_URL": bastion.operator_url,
            }
            code = "from lab.cli.provision import provision_app as a; a()"
            argv = [sys.executable, "-c", code]
            done = await trio.run_process(
                [*argv, "install", MAC, "node1", "--role", "worker"],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            listed = await trio.run_process(
                [*argv, "list", "-o", "json"], env=env, capture_stdout=True, capture_stderr=True
            )
            assert [m["mac"] for m in json.loads(listed.stdout)] == [MAC]
            checks = await audit_checks(labd, admin)
            assert {e["details"]["user"] for e in checks} == {"olga"}
            # Another server of labd's CA (labd itself here) is not taken for the bastion.
            wrong = await trio.run_process(
                [*argv, "list", "--bastion", labd.url],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert wrong.returncode == 3 and b"is not a labd bastion" in wrong.stderr
