"""Three servers: created one at a time after the first, upgraded one server at a time (the
stand-in records the order), then deleted with --keep-data; a new cluster on a node that
kept another cluster's data fails at start with k3s's own words."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from tests.clusters.rig import V1, V2, cluster_lab, free_port, k3s_program


async def test_three_servers_create_upgrade_delete(tmp_path: Path) -> None:
    nodes = ["s1", "s2", "s3"]
    with trio.fail_after(240):
        async with cluster_lab(tmp_path, nodes) as lab:
            await lab.add_artifact("k3s", V1, "amd64", k3s_program(V1, lab.record))
            await lab.add_artifact("k3s", V2, "amd64", k3s_program(V2, lab.record))
            images = b"stand-in air-gap images " * 1000
            await lab.add_artifact("k3s-airgap-images", V1, "amd64", images)
            async with await lab.http() as client:
                body = {"servers": nodes[:2], "api_address": "127.0.0.1", "api_port": free_port()}
                resp = await client.post("/api/clusters/c3/create", json=body)
                assert resp.status_code == 400 and "allow-even" in resp.text
                body["servers"] = nodes
                resp = await client.post("/api/clusters/c3/create", json=body)
                assert resp.status_code == 200, resp.text
                op = await lab.wait_op(client, "c3", resp.json()["id"])
                assert op["status"] == "succeeded", json.dumps(op, indent=1)
                configs = [(lab.root(n) / "etc/rancher/k3s/config.yaml").read_text() for n in nodes]
                flags = [
                    [
                        line
                        for line in c.splitlines()
                        if line.startswith(("cluster-cidr", "service-cidr", "secrets-"))
                    ]
                    for c in configs
                ]
                assert flags[0] == flags[1] == flags[2]
                for node in nodes:  # the air-gap images were staged beside k3s
                    staged = lab.root(node) / "var/lib/rancher/k3s/agent/images"
                    assert (staged / "k3s-airgap-images-amd64.tar").read_bytes() == images

                resp = await client.post("/api/clusters/c3/upgrade", json={"version": V2})
                assert resp.status_code == 200, resp.text
                op = await lab.wait_op(client, "c3", resp.json()["id"])
                assert op["status"] == "succeeded", json.dumps(op, indent=1)
                # each server is stopped and back at V2 before the next one is touched
                # one server down at a time: each stops and is back at V2 before the next stops
                upgrade_from = next(
                    i for i, c in enumerate(lab.calls()) if c.get("systemctl", [""])[0] == "restart"
                )
                events = [
                    (c["event"], c["node"], c["version"])
                    for c in lab.calls()[upgrade_from:]
                    if c.get("event") in ("start", "stop")
                ]
                assert events == [
                    (event, node, version)
                    for node in nodes
                    for event, version in (("stop", V1), ("start", V2))
                ]
                restarts = [
                    c["root"] for c in lab.calls() if c.get("systemctl", [""])[0] == "restart"
                ]
                assert [Path(r).parent.name for r in restarts] == nodes
                record = (await client.get("/api/clusters/c3", params={"live": "0"})).json()
                assert (record["status"], record["version"]) == ("ready", V2)

                resp = await client.post("/api/clusters/c3/delete", json={"keep_data": True})
                assert resp.status_code == 200, resp.text
                op = await lab.wait_op(client, "c3", resp.json()["id"])
                assert op["status"] == "succeeded", json.dumps(op, indent=1)
                for node in nodes:
                    assert not (lab.root(node) / "usr/local/bin/k3s").exists()
                    assert (lab.root(node) / "var/lib/rancher/k3s").exists()  # --keep-data
                assert (await client.get("/api/clusters/c3")).status_code == 404
                assert not [n for n in await lab.secret_names() if n.startswith("cluster/c3/")]
                resp = await client.get("/api/clusters/c3/operations")
                kinds = [o["kind"] for o in resp.json()["items"]]
                assert kinds == ["delete", "upgrade", "create"]

                body = {"servers": ["s1"], "api_address": "127.0.0.1", "api_port": free_port()}
                resp = await client.post("/api/clusters/new/create", json=body)
                op = await lab.wait_op(client, "new", resp.json()["id"])
            assert op["status"] == "failed"
            failed = next(s for s in op["steps"] if s["status"] == "failed")
            assert (failed["name"], failed["node"]) == ("start", "s1")
            assert (
                "bootstrap data already found and encrypted with different token"
                in (failed["error"])
            )
            assert op["error"].endswith("labctl clusters resume new")
