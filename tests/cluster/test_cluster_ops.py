"""A cluster operation with two labd replicas on one PostgreSQL: replica A runs it (its node
commands forwarded to B, which holds the node's agent), B refuses to take it over while A's
lease holds, and once A is killed B fails it when the lease runs out — never left running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.agent.executor import BASE_PATH
from tests.cluster.rig import ClusterRig
from tests.smoke.smoke import LABCTL

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BLOCKING_UNAME = """#!/bin/sh
echo blocked > "{marker}"
exec sleep 600
"""


def _last_op(rig: ClusterRig, on: str) -> dict[str, Any] | None:
    found = rig.labctl_json("clusters", "describe", "c1", on=on)["operations"]
    return found[0] if found else None


def test_one_replica_runs_an_operation_and_its_death_fails_it(
    rig: ClusterRig, tmp_path: Path
) -> None:
    bindir = tmp_path / "nodes" / "n1" / "bin"
    bindir.mkdir(parents=True)
    marker = tmp_path / "uname.blocked"
    (bindir / "uname").write_text(BLOCKING_UNAME.format(marker=marker))
    (bindir / "uname").chmod(0o755)
    settings = {
        "LABD_CLUSTER_EXEC_PATH": f"{tmp_path}/nodes/{{node}}/bin:{BASE_PATH}",
        "LABD_CLUSTER_NODE_ROOT": f"{tmp_path}/nodes/{{node}}/root",
        # long enough that a loaded machine still renews it in time, short for the test
        "LABD_CLUSTER_OP_LEASE": "8",
    }
    rig.start_replica("a", **settings)
    rig.start_replica("b", **settings)
    rig.login("a")
    rig.start_agent("n1", rig.agent_token(), enroll_on="b", servers=["b"])
    rig.wait_held("n1", "b")

    started = rig.labctl_json("clusters", "create", "c1", "--server", "server/n1", "--no-wait")
    assert (started["status"], started["owner"]) == ("running", "a")
    rig.wait_for("the node's command (forwarded A -> B)", lambda: marker.exists() or None, 60)

    # B may not take an operation A holds
    refused = rig.run([*LABCTL, "clusters", "resume", "c1"], rig.env("b"), expect=1).stderr
    assert "no failed operation" in refused

    rig.kill("labd-a")

    def failed() -> dict[str, Any] | None:
        op = _last_op(rig, "b")
        return op if op is not None and op["status"] == "failed" else None

    op = rig.wait_for("B fails the operation A left", failed, 60)
    assert "replica a" in op["error"] and "during step preflight on n1" in op["error"]
    step = next(s for s in op["steps"] if s["status"] == "failed")
    assert (step["name"], step["node"]) == ("preflight", "n1")
    assert not [s for s in op["steps"] if s["status"] == "running"]
