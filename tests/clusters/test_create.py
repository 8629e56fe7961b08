"""labctl clusters create with one server and two agents, through real lab-agent processes
running the real steps against the stand-in k3s and systemctl: each step printed as it runs
and shown by describe, the cluster reachable through its sealed kubeconfig, and no token or
kubeconfig in any answer, -o json output, audit detail or daemon log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio

from lab.kube import KubeClient, load_kubeconfig
from tests.clusters.rig import V1, cluster_lab, free_port, k3s_program
from tests.servers.seam import audit_entries


async def test_one_server_two_agents(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    nodes = ["s1", "a1", "a2"]
    with trio.fail_after(180):
        async with cluster_lab(tmp_path, nodes) as lab:
            binary = tmp_path / "k3s"
            binary.write_bytes(k3s_program(V1, lab.record))
            added = await lab.labctl(
                "artifacts", "add", str(binary), "--name", "k3s", "--version", V1, "--arch", "amd64"
            )
            assert added.returncode == 0, added.stderr
            port = free_port()
            async with await lab.http() as client:  # a2 joins through its label
                resp = await client.patch("/api/servers/a2/labels", json={"set": {"role": "w"}})
                assert resp.status_code == 200, resp.text
            done = await lab.labctl(
                "clusters", "create", "c1", "--server", "server/s1", "--agent", "server/a1",
                "-l", "role=w", "--version", V1, "--api-address", "127.0.0.1",
                "--api-port", str(port),
            )  # fmt: skip
            printed = done.stdout.decode()
            assert done.returncode == 0, done.stderr
            assert "[1/" in printed and "preflight server/s1: done" in printed
            assert "ready server/a2: done" in printed and "cluster c1: create done" in printed

            described = await lab.labctl("describe", "cluster/c1")
            text = described.stdout.decode()
            assert described.returncode == 0, described.stderr
            assert "create" in text and "succeeded" in text and "verify-ca server/s1: done" in text
            as_json = await lab.labctl("clusters", "describe", "c1", "-o", "json")
            op = json.loads(as_json.stdout)["operations"][0]
            assert op["status"] == "succeeded"
            steps = [(s["name"], s["node"], s["status"]) for s in op["steps"]]
            assert all(status == "done" for *_, status in steps)
            assert ("kubeconfig", "s1", "done") in steps and ("ready", "a2", "done") in steps

            # the stand-in saw the first server (cluster-init), then each agent join
            starts = [c for c in lab.calls() if c.get("event") == "start"]
            assert [(c["node"], c["role"], c["first"]) for c in starts] == [
                ("s1", "server", True),
                ("a1", "agent", False),
                ("a2", "agent", False),
            ]
            config = (lab.root("s1") / "etc/rancher/k3s/config.yaml").read_text()
            assert "cluster-init: true" in config and "secrets-encryption: true" in config
            kubeconfig = (await lab.secret("cluster/c1/kubeconfig")).decode()
            conn = load_kubeconfig(kubeconfig)
            assert conn.server == f"https://127.0.0.1:{port}"
            async with KubeClient(conn) as kube:
                items = (await kube.get("/api/v1/nodes"))["items"]
            assert {n["metadata"]["name"] for n in items} == set(nodes)

            async with await lab.http() as client:
                cluster = (await client.get("/api/clusters/c1")).json()
            assert (cluster["origin"], cluster["status"], cluster["version"]) == (
                "created",
                "ready",
                V1,
            )
            assert cluster["health"]["state"] == "Ready"
            assert cluster["api_server"] == f"https://127.0.0.1:{port}"

            token = (await lab.secret("cluster/c1/token")).decode()
            assert token.startswith("K10") and "::server:" in token
            entries = await audit_entries(lab.labd, "clusters:create")
            assert any(e.details.get("status") == "succeeded" for e in entries)
            secrets = [
                token.rpartition(":")[2],
                next(
                    line.split(":", 1)[1].strip()[:40]
                    for line in kubeconfig.splitlines()
                    if "client-key-data" in line
                ),
                (conn.client_key_pem or b"-\n-").decode().splitlines()[1],
            ]
            shown = [printed, done.stderr.decode(), text, as_json.stdout.decode()]
            shown += [json.dumps(e.details) for e in entries]
            shown += [p.read_text(errors="replace") for p in tmp_path.glob("*.log")]
            shown.append(caplog.text)  # labd's own log records
            assert "cluster" in caplog.text
            for secret in secrets:
                for where in shown:
                    assert secret not in where

            # day 2: a2 leaves (cordoned, drained, k3s removed, its Node deleted), then joins again
            async with KubeClient(conn) as kube:
                for pod, owners in (("web", []), ("ds-a2", [{"kind": "DaemonSet", "name": "ds"}])):
                    body = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": pod,
                            "namespace": "default",
                            "ownerReferences": owners,
                        },
                        "spec": {"nodeName": "a2", "containers": [{"name": "c", "image": "x"}]},
                    }
                    await kube.request("POST", "/api/v1/namespaces/default/pods", json=body)
            async with await lab.http() as client:
                resp = await client.delete("/api/clusters/c1/nodes/a2")
                assert resp.status_code == 200, resp.text
                op = await lab.wait_op(client, "c1", resp.json()["id"])
                assert op["status"] == "succeeded", json.dumps(op, indent=1)
                assert [s["name"] for s in op["steps"]] == [
                    "cordon",
                    "drain",
                    "uninstall",
                    "delete-node",
                ]
            assert not (lab.root("a2") / "usr/local/bin/k3s").exists()
            async with KubeClient(conn) as kube:
                items = (await kube.get("/api/v1/nodes"))["items"]
                pods = (await kube.get("/api/v1/pods"))["items"]
            assert {n["metadata"]["name"] for n in items} == {"s1", "a1"}
            # drained: the pod is evicted, the DaemonSet's pod is left to its controller
            assert {p["metadata"]["name"] for p in pods} == {"ds-a2"}
            done = await lab.labctl("clusters", "add-node", "c1", "server/a2", "--role", "agent")
            assert done.returncode == 0, done.stderr
            assert "ready server/a2: done" in done.stdout.decode()
            async with await lab.http() as client:
                ops = (await client.get("/api/clusters/c1/operations")).json()["items"]
            assert [o["kind"] for o in ops] == ["add-node", "remove-node", "create"]
            assert ops[0]["params"]["spec"]["agents"] == ["a1", "a2"]
