"""clusters create through real lab-agent processes running the real steps against the
stand-in k3s and systemctl: every step recorded, the cluster reachable through its sealed
kubeconfig, and no secret in any answer or audit detail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.kube import KubeClient, load_kubeconfig
from tests.clusters.rig import V1, cluster_lab, free_port, k3s_program
from tests.servers.seam import audit_entries


async def test_one_server_two_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = ["s1", "a1", "a2"]
    with trio.fail_after(180):
        async with cluster_lab(tmp_path, monkeypatch, nodes) as lab:
            lab.artifacts.add("k3s", V1, "amd64", k3s_program(V1, lab.record))
            port = free_port()
            async with await lab.http() as client:
                resp = await client.post(
                    "/api/clusters/c1/create",
                    json={
                        "servers": ["server/s1"],
                        "agents": ["server/a1", "server/a2"],
                        "version": V1,
                        "api_address": "127.0.0.1",
                        "api_port": port,
                    },
                )
                assert resp.status_code == 200, resp.text
                op = await lab.wait_op(client, "c1", resp.json()["id"])
                assert op["status"] == "succeeded", json.dumps(op, indent=1)
                steps = [(s["name"], s["node"], s["status"]) for s in op["steps"]]
                assert all(status == "done" for *_, status in steps)
                assert ("verify-ca", "s1", "done") in steps and ("ready", "a2", "done") in steps
                answers = [resp.text, json.dumps(op)]

            # the stand-in saw the first server with cluster-init, then each agent join
            starts = [c for c in lab.calls() if c.get("event") == "start"]
            assert [(c["node"], c["role"]) for c in starts] == [
                ("s1", "server"),
                ("a1", "agent"),
                ("a2", "agent"),
            ]
            config = (lab.root("s1") / "etc/rancher/k3s/config.yaml").read_text()
            assert "cluster-init: true" in config and "secrets-encryption: true" in config
            kubeconfig = (await lab.secret("cluster/c1/kubeconfig")).decode()
            conn = load_kubeconfig(kubeconfig)
            assert conn.server == f"https://127.0.0.1:{port}"
            async with KubeClient(conn) as kube:
                names = {n["metadata"]["name"] for n in (await kube.get("/api/v1/nodes"))["items"]}
            assert names == {"s1", "a1", "a2"}

            token = (await lab.secret("cluster/c1/token")).decode()
            assert token.startswith("K10") and "::server:" in token
            entries = await audit_entries(lab.labd, "clusters:create")
            assert any(e.details.get("status") == "succeeded" for e in entries)
            _no_secret([*answers, *(json.dumps(e.details) for e in entries)], token, conn)


def _no_secret(texts: list[str], token: str, conn: Any) -> None:
    secret = token.rpartition(":")[2]
    key_line = conn.client_key_pem.decode().splitlines()[1]
    for text in texts:
        assert secret not in text and token not in text
        assert key_line not in text
