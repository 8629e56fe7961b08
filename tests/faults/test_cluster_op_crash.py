"""labd killed with SIGKILL in the middle of a cluster create: once a labd runs again, the
operation is shown failed at the step it was in, with how to resume — never "running".

The node's ``uname`` (first on its PATH through cluster_exec_path) blocks the first time it
runs, so labd is killed while the preflight step runs on the node. labd runs under a fixed
replica id, so the labd started again knows the operation was its own and fails it at once
(the lease is long: waiting for it would fail the test); a lease running out is what
tests/cluster/test_cluster_ops.py shows with two replicas.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from lab.agent.executor import BASE_PATH
from tests.faults.site import AGENT, labctl, start_site, wait_for

BLOCKING_UNAME = """#!/bin/sh
if [ ! -e "{marker}" ]; then
    echo blocked > "{marker}"
    exec sleep 600
fi
exec /bin/uname "$@"
"""


def _describe(site: Any) -> dict[str, Any] | None:
    done = subprocess.run(
        labctl("clusters", "describe", "c1", "-o", "json"),
        env=site.env(), capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        return None
    ops: list[dict[str, Any]] = json.loads(done.stdout)["operations"]
    return ops[0] if ops else None


def test_labd_killed_mid_create_leaves_a_failed_operation(tmp_path: Path) -> None:
    bindir = tmp_path / "nodes" / AGENT / "bin"
    bindir.mkdir(parents=True)
    (tmp_path / "nodes" / AGENT / "root").mkdir()
    marker = tmp_path / "uname.blocked"
    uname = bindir / "uname"
    uname.write_text(BLOCKING_UNAME.format(marker=marker))
    uname.chmod(0o755)
    site = start_site(
        tmp_path,
        LABD_CLUSTER_EXEC_PATH=f"{tmp_path}/nodes/{{node}}/bin:{BASE_PATH}",
        LABD_CLUSTER_NODE_ROOT=f"{tmp_path}/nodes/{{node}}/root",
        LABD_REPLICA_ID="r1",
        LABD_CLUSTER_OP_LEASE="600",
    )
    try:
        started = subprocess.run(
            labctl("clusters", "create", "c1", "--server", f"server/{AGENT}", "--no-wait"),
            env=site.env(), capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        wait_for("the node's blocked uname", marker.exists)
        op = _describe(site)
        assert op is not None and op["status"] == "running"
        site.labd.kill9()

        site.start_labd("labd-again")
        failed = _describe(site)  # failed before the new labd said it was ready
        assert failed is not None and failed["status"] == "failed", failed
        assert "replica r1) stopped while running this operation" in failed["error"]
        step = next(s for s in failed["steps"] if s["status"] == "failed")
        assert (step["name"], step["node"]) == ("preflight", AGENT)
        assert step["error"].startswith("interrupted")
        assert not [s for s in failed["steps"] if s["status"] == "running"]
        text = subprocess.run(
            labctl("describe", "cluster/c1"), env=site.env(), capture_output=True, check=False,
            timeout=60,
        ).stdout.decode()  # fmt: skip
        assert "failed" in text and "preflight server/f1: failed" in text
        audit = subprocess.run(
            labctl("get", "audit", "-o", "json"), env=site.env(), capture_output=True,
            check=False, timeout=60,
        )  # fmt: skip
        entries = [e for e in json.loads(audit.stdout) if e["action"] == "clusters:create"]
        assert any(
            e["result"] == "error" and "labctl clusters resume c1" in json.dumps(e["details"])
            for e in entries
        ), entries
    finally:
        site.stop()
