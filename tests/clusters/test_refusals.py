"""What a create refuses or survives, through real agents and the stand-in k3s:

- a first server that serves a CA other than the cluster's (its hash is not the token's) is
  refused at verify-ca, before any other node is touched;
- a node whose data dir holds another cluster's bootstrap data fails at start with k3s's
  own words, and the operation says how to resume;
- an agent killed mid-step fails that step naming the node; once it is back, resume
  finishes the operation from there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.clusters.rig import V1, cluster_lab, free_port, k3s_program


def _create_body(servers: list[str], agents: list[str] = ()) -> dict[str, object]:  # type: ignore[assignment]
    return {
        "servers": servers,
        "agents": list(agents),
        "version": V1,
        "api_address": "127.0.0.1",
        "api_port": free_port(),
    }


async def test_a_server_with_another_ca_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(180):
        async with cluster_lab(tmp_path, monkeypatch, ["s1", "a1"]) as lab:
            lab.artifacts.add("k3s", V1, "amd64", k3s_program(V1, lab.record, rogue_ca=True))
            async with await lab.http() as client:
                resp = await client.post(
                    "/api/clusters/c1/create", json=_create_body(["s1"], ["a1"])
                )
                assert resp.status_code == 200, resp.text
                op = await lab.wait_op(client, "c1", resp.json()["id"])
            assert op["status"] == "failed"
            failed = next(s for s in op["steps"] if s["status"] == "failed")
            assert (failed["name"], failed["node"]) == ("verify-ca", "s1")
            assert "not the cluster CA hash" in failed["error"]
            assert "labctl clusters resume c1" in op["error"]
            # the agent was never configured nor started
            assert not (lab.root("a1") / "etc/rancher/k3s/config.yaml").exists()
            assert [c["node"] for c in lab.calls() if c.get("event") == "start"] == ["s1"]


async def test_another_clusters_data_is_refused_with_k3s_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(180):
        async with cluster_lab(tmp_path, monkeypatch, ["s1"]) as lab:
            lab.artifacts.add("k3s", V1, "amd64", k3s_program(V1, lab.record))
            async with await lab.http() as client:
                resp = await client.post("/api/clusters/old/create", json=_create_body(["s1"]))
                op = await lab.wait_op(client, "old", resp.json()["id"])
                assert op["status"] == "succeeded", json.dumps(op)
                resp = await client.post("/api/clusters/old/delete", json={"keep_data": True})
                op = await lab.wait_op(client, "old", resp.json()["id"])
                assert op["status"] == "succeeded", json.dumps(op)

                resp = await client.post("/api/clusters/new/create", json=_create_body(["s1"]))
                op = await lab.wait_op(client, "new", resp.json()["id"])
            assert op["status"] == "failed"
            failed = next(s for s in op["steps"] if s["status"] == "failed")
            assert (failed["name"], failed["node"]) == ("start", "s1")
            assert (
                "bootstrap data already found and encrypted with different token"
                in (failed["error"])
            )
            assert op["error"].endswith("labctl clusters resume new")


BLOCKING_UNAME = """#!/bin/sh
if [ ! -e "{marker}" ]; then
    echo blocked > "{marker}"
    exec sleep 600
fi
exec /bin/uname "$@"
"""


async def test_an_agent_killed_mid_step_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(240):
        async with cluster_lab(tmp_path, monkeypatch, ["s1", "a1"]) as lab:
            lab.artifacts.add("k3s", V1, "amd64", k3s_program(V1, lab.record))
            marker = tmp_path / "uname.blocked"
            uname = tmp_path / "nodes" / "a1" / "bin" / "uname"
            uname.write_text(BLOCKING_UNAME.format(marker=marker))
            uname.chmod(0o755)
            async with await lab.http() as client:
                resp = await client.post(
                    "/api/clusters/c1/create", json=_create_body(["s1"], ["a1"])
                )
                op_id = resp.json()["id"]
                while not marker.exists():
                    await trio.sleep(0.05)
                await lab.kill_agent("a1")
                op = await lab.wait_op(client, "c1", op_id)
                assert op["status"] == "failed"
                failed = [s for s in op["steps"] if s["status"] == "failed"]
                assert [(s["name"], s["node"]) for s in failed] == [("preflight", "a1")]
                assert "server/a1" in failed[0]["error"]
                assert "nothing was changed" in op["error"]

                assert lab.nursery is not None
                await lab.start_agent(lab.nursery, "a1")
                resp = await client.post("/api/clusters/c1/resume")
                assert resp.status_code == 200, resp.text
                op = await lab.wait_op(client, "c1", op_id)
                assert op["status"] == "succeeded", json.dumps(op, indent=1)
                # a second resume has nothing to do
                resp = await client.post("/api/clusters/c1/resume")
                assert resp.status_code == 409
