"""The pure rules of lab.kube.apply at their boundaries: who may be pruned (labctl alone among
the appliers) and when a workload is ready (each count one short, generations, Job outcomes)."""

from __future__ import annotations

from typing import Any

import pytest

from lab.kube.apply import managers, prunable, readiness


def managed(*entries: tuple[str, str]) -> dict[str, Any]:
    fields = [{"manager": m, "operation": op, "apiVersion": "v1"} for m, op in entries]
    return {"metadata": {"name": "x", "managedFields": fields}}


def test_managers_reads_each_entry_and_tolerates_none() -> None:
    assert managers(managed(("labctl", "Apply"), ("kube-controller-manager", "Update"))) == [
        ("labctl", "Apply"),
        ("kube-controller-manager", "Update"),
    ]
    assert managers({}) == [] and managers({"metadata": None}) == []
    assert managers({"metadata": {"managedFields": None}}) == []
    assert managers({"metadata": {"managedFields": [{}]}}) == [("", "")]


@pytest.mark.parametrize(
    ("entries", "verdict"),
    [
        ([("labctl", "Apply")], (True, "")),
        ([("labctl", "Apply"), ("k3s", "Update"), ("kubectl-edit", "Update")], (True, "")),
        ([("labctl", "Update")], (True, "")),
        ([("labctl", "Apply"), ("labctl", "Update")], (True, "")),
        ([], (False, "not managed by labctl (managers: nobody)")),
        (
            [("kubectl", "Apply"), ("helm", "Update"), ("kubectl", "Update")],
            (False, "not managed by labctl (managers: helm, kubectl)"),
        ),
        ([("labctlx", "Apply")], (False, "not managed by labctl (managers: labctlx)")),
        (
            [("labctl", "Apply"), ("helm", "Apply"), ("argo", "Apply"), ("helm", "Apply")],
            (False, "also applied by argo, helm"),
        ),
        ([("labctl", "Apply"), ("kubectl", "apply")], (True, "")),
    ],
)
def test_prunable_only_when_labctl_alone_applied(
    entries: list[tuple[str, str]], verdict: tuple[bool, str]
) -> None:
    assert prunable(managed(*entries)) == verdict


def test_prunable_for_another_manager_name() -> None:
    obj = managed(("labctl", "Apply"), ("lab-e2e", "Apply"))
    assert prunable(obj, "lab-e2e") == (False, "also applied by labctl")
    assert prunable(managed(("lab-e2e", "Apply")), manager="lab-e2e") == (True, "")


def workload(
    kind: str, spec: dict[str, Any], status: dict[str, Any], gen: int = 1
) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"generation": gen}, "spec": spec, "status": status}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
@pytest.mark.parametrize(
    ("spec", "status", "verdict"),
    [
        ({"replicas": 2}, {"readyReplicas": 2, "updatedReplicas": 2}, (True, "2/2 ready")),
        ({"replicas": 2}, {"readyReplicas": 3, "updatedReplicas": 3}, (True, "3/2 ready")),
        (
            {"replicas": 2},
            {"readyReplicas": 1, "updatedReplicas": 2},
            (False, "1/2 ready, 2/2 updated"),
        ),
        (
            {"replicas": 2},
            {"readyReplicas": 2, "updatedReplicas": 1},
            (False, "2/2 ready, 1/2 updated"),
        ),
        ({}, {"readyReplicas": 1, "updatedReplicas": 1}, (True, "1/1 ready")),
        ({}, {}, (False, "0/1 ready, 0/1 updated")),
        (None, {"readyReplicas": None, "updatedReplicas": None}, (False, "0/1 ready, 0/1 updated")),
        ({"replicas": 0}, None, (True, "0/0 ready")),
    ],
)
def test_replica_workloads(
    kind: str, spec: dict[str, Any] | None, status: dict[str, Any] | None, verdict: tuple[bool, str]
) -> None:
    assert readiness({"kind": kind, "spec": spec, "status": status}) == verdict


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (
            {"desiredNumberScheduled": 3, "numberReady": 3, "updatedNumberScheduled": 3},
            (True, "3/3 ready"),
        ),
        (
            {"desiredNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3},
            (False, "2/3 ready, 3/3 updated"),
        ),
        (
            {"desiredNumberScheduled": 3, "numberReady": 3, "updatedNumberScheduled": 2},
            (False, "3/3 ready, 2/3 updated"),
        ),
        ({}, (True, "0/0 ready")),
        ({"desiredNumberScheduled": 1}, (False, "0/1 ready, 0/1 updated")),
    ],
)
def test_daemonsets(status: dict[str, Any], verdict: tuple[bool, str]) -> None:
    assert readiness({"kind": "DaemonSet", "status": status}) == verdict


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_a_generation_not_yet_observed_is_not_ready(kind: str) -> None:
    done = (
        {"replicas": 1},
        {
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "desiredNumberScheduled": 1,
            "numberReady": 1,
            "updatedNumberScheduled": 1,
        },
    )
    behind = workload(kind, done[0], {**done[1], "observedGeneration": 2}, gen=3)
    assert readiness(behind) == (False, "generation 3 not yet observed (2)")
    for observed in (3, 4):
        assert readiness(workload(kind, done[0], {**done[1], "observedGeneration": observed}, 3))[0]
    # either side unknown: judged on the counts alone
    assert readiness(workload(kind, done[0], done[1], gen=3))[0]
    no_generation = workload(kind, done[0], {**done[1], "observedGeneration": 0})
    del no_generation["metadata"]["generation"]
    assert readiness(no_generation)[0]
    assert readiness({**no_generation, "metadata": None})[0]


@pytest.mark.parametrize(
    ("conditions", "succeeded", "verdict"),
    [
        ([{"type": "Complete", "status": "True"}], 1, (True, "complete")),
        ([{"type": "Complete", "status": "False"}], 2, (False, "2 succeeded")),
        (
            [{"type": "Failed", "status": "True", "reason": "Deadline"}],
            0,
            (False, "failed: Deadline"),
        ),
        (
            [{"type": "Failed", "status": "True", "message": "m", "reason": "r"}],
            0,
            (False, "failed: m"),
        ),
        ([{"type": "Failed", "status": "True"}], 0, (False, "failed: ")),
        ([{"type": "Failed", "status": "False"}], None, (False, "0 succeeded")),
        (
            [
                {"type": "Failed", "status": "True", "reason": "r"},
                {"type": "Complete", "status": "True"},
            ],
            1,
            (False, "failed: r"),
        ),
        (
            [
                {"type": "Complete", "status": "True"},
                {"type": "Failed", "status": "True", "reason": "r"},
            ],
            1,
            (True, "complete"),
        ),
        ([{"type": "Suspended", "status": "True"}], 0, (False, "0 succeeded")),
        (None, 0, (False, "0 succeeded")),
    ],
)
def test_jobs(
    conditions: list[dict[str, str]] | None, succeeded: int | None, verdict: tuple[bool, str]
) -> None:
    status = {"conditions": conditions, "succeeded": succeeded}
    assert readiness({"kind": "Job", "status": status}) == verdict


@pytest.mark.parametrize("kind", ["ConfigMap", "Service", None])
def test_other_kinds_are_ready_once_they_exist(kind: str | None) -> None:
    assert readiness({"kind": kind, "status": {"readyReplicas": 0}}) == (True, "exists")
