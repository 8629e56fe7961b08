"""What a create refuses or survives, through real agents and the stand-in k3s:

- preflight lists every problem of every node at once (a busy API port, a missing artifact)
  and changes nothing; fixed, ``resume`` runs it again;
- a first server that serves a CA other than the cluster's (its hash is not the token's) is
  refused at verify-ca, before any other node is touched;
- an agent killed mid-step fails that step naming the node; once it is back, resume
  finishes the operation from there.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import trio

from tests.clusters.rig import V1, cluster_lab, free_port, k3s_program


async def test_preflight_then_a_server_with_another_ca(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with cluster_lab(tmp_path, ["s1", "a1"]) as lab:
            # a1 has every other problem preflight knows, told by stand-ins on its PATH
            for tool, script in BROKEN_NODE.items():
                stub = tmp_path / "nodes" / "a1" / "bin" / tool
                stub.write_text(script)
                stub.chmod(0o755)
            # ... and already runs k3s for another cluster
            foreign = lab.root("a1") / "etc/rancher/k3s/config.yaml"
            foreign.parent.mkdir(parents=True)
            foreign.write_text('token: "K10' + "f" * 64 + '::server:theirs"\n')
            with socket.socket() as busy:
                busy.bind(("127.0.0.1", 0))
                busy.listen()
                port = str(busy.getsockname()[1])
                # no artifact of this version at all, and the API port is taken on the server
                done = await lab.labctl(
                    "clusters", "create", "c1", "--server", "server/s1", "--agent",
                    "server/a1", "--version", V1, "--api-address", "127.0.0.1",
                    "--api-port", port,
                )  # fmt: skip
            assert done.returncode == 1
            err = done.stderr.decode()
            assert "preflight failed, nothing was changed" in err
            assert f"server/s1: port {port} is in use" in err
            assert f"server/s1: no k3s {V1} for amd64" in err
            assert f"server/a1: no k3s {V1} for amd64" in err
            assert "server/a1: no default route" in err
            assert "server/a1: SELinux is enforcing but k3s-selinux is not installed" in err
            assert "server/a1: clock is" in err and "off labd's" in err
            assert "server/a1: only 1 MiB free" in err
            for tool in BROKEN_NODE:
                (tmp_path / "nodes" / "a1" / "bin" / tool).unlink()
            assert "server/a1: " + str(foreign) + " is another k3s cluster's" in err
            assert "theirs" not in err  # the other cluster's token is not shown
            assert foreign.read_text().endswith('::server:theirs"\n')  # left as it was
            foreign.unlink()
            for node in ("s1", "a1"):
                assert [p.name for p in lab.root(node).rglob("*") if p.is_file()] == []
            assert not [c for c in lab.calls() if "systemctl" in c]

            # fixed (the port is free again, the artifact added), but the server is not ours
            await lab.add_artifact("k3s", V1, "amd64", k3s_program(V1, lab.record, rogue_ca=True))
            done = await lab.labctl("clusters", "resume", "c1", "-o", "json")
            assert done.returncode == 1
            op = json.loads(done.stdout)
            assert op["status"] == "failed"
            failed = next(s for s in op["steps"] if s["status"] == "failed")
            assert (failed["name"], failed["node"]) == ("verify-ca", "s1"), op["error"]
            assert "not the cluster CA hash" in failed["error"]
            assert op["error"].endswith("labctl clusters resume c1")
            got = await lab.labctl("get", "clusters", "-o", "json")
            assert [c["status"] for c in json.loads(got.stdout)] == ["failed"]
            # the agent was never configured nor started
            assert not (lab.root("a1") / "etc/rancher/k3s/config.yaml").exists()
            assert [c["node"] for c in lab.calls() if c.get("event") == "start"] == ["s1"]


BROKEN_NODE = {
    "ip": "#!/bin/sh\nexit 0\n",  # no default route
    "getenforce": "#!/bin/sh\necho Enforcing\n",
    "rpm": "#!/bin/sh\necho 'package k3s-selinux is not installed'\nexit 1\n",
    "date": "#!/bin/sh\necho 1000000000\n",  # 2001: far off labd's clock
    "df": "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
    "echo '/dev/x 4096 3072 1024 75% /'\n",
}

BLOCKING_UNAME = """#!/bin/sh
if [ ! -e "{marker}" ]; then
    echo blocked > "{marker}"
    exec sleep 600
fi
exec /bin/uname "$@"
"""


async def test_an_agent_killed_mid_step_then_resume(tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with cluster_lab(tmp_path, ["s1", "a1"]) as lab:
            await lab.add_artifact("k3s", V1, "amd64", k3s_program(V1, lab.record))
            marker = tmp_path / "uname.blocked"
            uname = tmp_path / "nodes" / "a1" / "bin" / "uname"
            uname.write_text(BLOCKING_UNAME.format(marker=marker))
            uname.chmod(0o755)
            body = {
                "servers": ["s1"],
                "agents": ["a1"],
                "version": V1,
                "api_address": "127.0.0.1",
                "api_port": free_port(),
            }
            async with await lab.http() as client:
                resp = await client.post("/api/clusters/c1/create", json=body)
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
