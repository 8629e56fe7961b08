"""Abuse cases of cluster operations: who may start one, and what a join token binds.

- A viewer (clusters:read only) starting a create or a delete gets 403 and nothing is
  recorded; the refusal is audited.
- A datastore URL's password is sealed: never in an answer, an audit detail or a file of
  labd's data dir; a delete --force of a cluster whose node is gone forgets it all.
- A token made for one cluster does not verify another cluster's CA (a joining node, and
  labd's verify-ca step, refuse a server whose CA hash is not the token's).
- A token not in the secure K10 form is refused; the token never shows its secret in repr.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from lab import pki
from lab.errors import Invalid
from lab.labd.clusterops.token import ca_matches, make_token, parse_token
from tests.labd.harness import running_labd
from tests.servers.seam import audit_entries


async def test_a_viewer_cannot_start_a_create(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            for role in ("viewer",):
                token = await labd.create_token(admin, "user", user=f"u-{role}", roles=[role])
                who = await labd.enroll_user(f"u-{role}", token)
                async with labd.client(who) as http:
                    resp = await http.post(
                        "/api/clusters/c1/create", json={"servers": ["server/x"]}
                    )
                    assert resp.status_code == 403, resp.text
                    resp = await http.post("/api/clusters/c1/delete", json={})
                    assert resp.status_code == 403, resp.text
            assert labd.context is not None
            assert await labd.context.store.cluster_ops.list(cluster="c1") == []
            denied = await audit_entries(labd, "clusters:create")
            assert denied and all(e.result == "denied" for e in denied)
            # an admin with a bad name is told which field
            async with labd.client(admin) as http:
                resp = await http.post("/api/clusters/Bad_Name/create", json={"servers": ["x"]})
                assert resp.status_code == 400
                assert resp.json()["error"]["details"]["fields"] == ["path.name"]


def test_a_token_binds_its_cluster_ca() -> None:
    ca_a = pki.create_ca("k3s-server-ca@a").cert_pem()
    ca_b = pki.create_ca("k3s-server-ca@b").cert_pem()
    token_a = make_token(ca_a)
    parsed = parse_token(str(token_a))
    assert ca_matches(parsed, ca_a)
    assert not ca_matches(parsed, ca_b)  # the other cluster's server is refused
    assert make_token(ca_a).secret != token_a.secret  # a fresh secret per cluster
    assert token_a.secret not in repr(token_a)


@pytest.mark.parametrize(
    "text",
    [
        "K10abc::server:x",
        "secret-only",
        "K10" + "0" * 64 + "::server:",
        "K10" + "g" * 64 + "::server:s",
    ],
)
def test_non_secure_tokens_are_refused(text: str) -> None:
    with pytest.raises(Invalid):
        parse_token(text)


async def test_a_datastore_password_is_sealed_and_never_shown(tmp_path: Path) -> None:
    password = "pg-Pa55word-that-must-not-leak"
    url = f"postgres://k3s:{password}@db.lab:5432/k3s"
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent")
            await labd.enroll_agent("s1", token, {"os": "linux"})
            async with labd.client(admin) as http:
                resp = await http.post(
                    "/api/clusters/c1/create", json={"servers": ["server/s1"], "datastore": url}
                )
                assert resp.status_code == 200, resp.text
                shown = [resp.text]
                op_id = resp.json()["id"]
                while (op := (await http.get(f"/api/clusters/c1/operations/{op_id}")).json())[
                    "status"
                ] == "running":
                    await trio.sleep(0.1)
                shown.append(json.dumps(op))
                assert op["status"] == "failed"  # the node's agent is not connected
                assert "not connected" in op["error"]
            assert labd.context is not None
            assert await labd.context.secrets.get("cluster/c1/datastore") == url.encode()
            entries = await audit_entries(labd, "clusters:create")
            shown += [json.dumps(e.details) for e in entries]
            for text in shown:
                assert password not in text
            for path in (tmp_path / "labd").rglob("*"):
                if path.is_file():
                    assert password.encode() not in path.read_bytes(), path

            # the node never had an agent: a delete stops there, --force skips it and forgets
            async with labd.client(admin) as http:

                async def delete(**body: bool) -> dict[str, object]:
                    resp = await http.post("/api/clusters/c1/delete", json=body)
                    assert resp.status_code == 200, resp.text
                    path = f"/api/clusters/c1/operations/{resp.json()['id']}"
                    while (op := (await http.get(path)).json())["status"] == "running":
                        await trio.sleep(0.1)
                    return op  # type: ignore[no-any-return]

                stopped = await delete()
                assert stopped["status"] == "failed" and "not connected" in str(stopped["error"])
                forced = await delete(force=True)
                assert forced["status"] == "succeeded", forced
                steps = forced["steps"]
                assert isinstance(steps, list) and steps[0]["error"].startswith("skipped (--force)")
                assert (await http.get("/api/clusters/c1")).status_code == 404
            assert [
                n for n in await labd.context.secrets.names() if n.startswith("cluster/c1/")
            ] == []
