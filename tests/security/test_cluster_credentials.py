"""Abuse cases of the cluster registry: who else could present this, and what would they get?

- an agent certificate (a compromised node) importing a cluster or reading a kubeconfig;
- a viewer or an operator reading credentials (only clusters:read-credentials may);
- a user allowed clusters:import on some clusters naming another in the body;
- no client certificate at all;
- the kubeconfig or its token showing up in any other answer or in the audit log.
Every refusal is audited with the action and the cluster it named.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from lab.labd.context import LabdContext
from tests.kube.kmock_server import KubeAPI, run_kube_api
from tests.labd.harness import Credentials, RunningLabd, running_labd


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with run_kube_api(tmp_path) as api:
        yield api


async def import_as(labd: RunningLabd, who: Credentials, body: dict[str, Any]) -> httpx.Response:
    async with labd.client(who) as http:
        return await http.post("/api/clusters/import", json=body)


async def user_with(
    labd: RunningLabd, admin: Credentials, name: str, roles: list[str]
) -> Credentials:
    token = await labd.create_token(admin, "user", user=name, roles=roles)
    return await labd.enroll_user(name, token)


async def audit_of(context: LabdContext, action: str) -> list[Any]:
    return await context.store.audit.list(action=action)


async def test_agent_certificates_neither_import_nor_read_credentials(
    tmp_path: Path, kube_api: KubeAPI
) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            resp = await import_as(labd, admin, {"name": "lab", "kubeconfig": kube_api.kubeconfig})
            assert resp.status_code == 201, resp.text
            agent = await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
            resp = await import_as(labd, agent, {"name": "evil", "kubeconfig": kube_api.kubeconfig})
            assert resp.status_code == 403
            assert resp.json()["error"]["details"]["reason"] == "wrong_profile"
            async with labd.client(agent) as http:
                for path in ("/api/clusters/lab/kubeconfig", "/api/clusters/lab", "/api/clusters"):
                    got = await http.get(path)
                    assert got.status_code == 403, path
                    assert kube_api.token not in got.text
                gone = await http.delete("/api/clusters/lab")
                assert gone.status_code == 403
            assert [c.name for c in await labd.context.clusters.list()] == ["lab"]
            assert await labd.context.secrets.names() == ["cluster/lab/kubeconfig"]


async def test_viewers_and_operators_read_clusters_but_not_credentials(
    tmp_path: Path, kube_api: KubeAPI
) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            resp = await import_as(labd, admin, {"name": "lab", "kubeconfig": kube_api.kubeconfig})
            assert resp.status_code == 201, resp.text
            for name, role in (("vera", "viewer"), ("otto", "operator")):
                who = await user_with(labd, admin, name, [role])
                async with labd.client(who) as http:
                    listing = await http.get("/api/clusters")
                    assert listing.status_code == 200, listing.text
                    assert [c["name"] for c in listing.json()["items"]] == ["lab"]
                    creds = await http.get("/api/clusters/lab/kubeconfig")
                    assert creds.status_code == 403, creds.text
                    assert "clusters:read-credentials" in creds.json()["error"]["message"]
                    for text in (listing.text, creds.text):
                        assert kube_api.token not in text
            refused = await audit_of(labd.context, "clusters:read-credentials")
            assert {(e.user, e.result, e.resource) for e in refused} == {
                ("user/vera", "denied", "cluster/lab"),
                ("user/otto", "denied", "cluster/lab"),
            }
            viewer = await user_with(labd, admin, "vic", ["viewer"])
            resp = await import_as(
                labd, viewer, {"name": "mine", "kubeconfig": kube_api.kubeconfig}
            )
            assert resp.status_code == 403
            denied = await audit_of(labd.context, "clusters:import")
            assert ("user/vic", "denied", "cluster/mine") in {
                (e.user, e.result, e.resource) for e in denied
            }


async def test_import_is_checked_against_the_name_in_the_body(
    tmp_path: Path, kube_api: KubeAPI
) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            async with labd.client(admin) as http:
                made = await http.post(
                    "/api/roles",
                    json={
                        "name": "dev-importer",
                        "permissions": [
                            {
                                "effect": "allow",
                                "action": "clusters:import",
                                "resource": "cluster/dev-*",
                            }
                        ],
                    },
                )
                assert made.status_code == 201, made.text
            dev = await user_with(labd, admin, "dana", ["dev-importer"])
            ok = await import_as(labd, dev, {"name": "dev-1", "kubeconfig": kube_api.kubeconfig})
            assert ok.status_code == 201, ok.text
            bad = await import_as(labd, dev, {"name": "prod", "kubeconfig": kube_api.kubeconfig})
            assert bad.status_code == 403
            # A name that is not a plain name never matches a narrow grant.
            for sneaky in ("dev-*", "dev-x/../prod", "dev-2\nprod"):
                resp = await import_as(
                    labd, dev, {"name": sneaky, "kubeconfig": kube_api.kubeconfig}
                )
                assert resp.status_code == 403, (sneaky, resp.text)
            async with labd.client(dev) as http:
                garbled = await http.post("/api/clusters/import", content=b"{not json")
                assert garbled.status_code == 403
            assert [c.name for c in await labd.context.clusters.list()] == ["dev-1"]
            denied = await audit_of(labd.context, "clusters:import")
            assert ("user/dana", "denied", "cluster/prod") in {
                (e.user, e.result, e.resource) for e in denied
            }
            # Importing does not let her read back what she imported.
            async with labd.client(dev) as http:
                assert (await http.get("/api/clusters/dev-1/kubeconfig")).status_code == 403


async def test_no_client_certificate_is_unauthenticated(tmp_path: Path, kube_api: KubeAPI) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd, labd.client() as anonymous:
            resp = await anonymous.post(
                "/api/clusters/import", json={"name": "x", "kubeconfig": kube_api.kubeconfig}
            )
            assert resp.status_code == 401
            assert (await anonymous.get("/api/clusters/x/kubeconfig")).status_code == 401
