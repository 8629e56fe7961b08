"""lab.kube.apply against the API double: server-side apply creates then updates under the
labctl field manager, prune is allowed only for what labctl alone applied, readiness."""

from __future__ import annotations

import httpx
import pytest
import trio

from lab.errors import Invalid, NotFound
from lab.kube import KubeClient
from lab.kube.apply import Discovery, apply, delete, fetch, prunable, readiness, wait_ready
from lab.model.apps import ObjectRef
from tests.kube.kmock_server import KubeAPI


def configmap(name: str, **data: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "apps"},
        "data": data,
    }


async def test_apply_creates_then_updates_with_the_labctl_manager(kube_ssa: KubeAPI) -> None:
    with trio.fail_after(30):
        async with KubeClient(kube_ssa.connection()) as client:
            found = Discovery(client)
            made = await apply(found, configmap("cfg", a="1"))
            assert made["data"] == {"a": "1"}
            assert made["metadata"]["managedFields"][0]["manager"] == "labctl"
            again = await apply(found, configmap("cfg", a="2"))
            assert again["data"] == {"a": "2"}
            ref = ObjectRef.of(configmap("cfg"))
            stored = await fetch(found, ref)
            assert stored is not None and stored["data"] == {"a": "2"}
            assert prunable(stored) == (True, "")
            assert await delete(found, ref)
            assert await fetch(found, ref) is None
            assert not await delete(found, ref)
            with pytest.raises(NotFound, match="does not serve Widget"):
                await apply(found, {**configmap("x"), "kind": "Widget"})


async def test_objects_another_manager_holds_are_not_prunable(kube_ssa: KubeAPI) -> None:
    with trio.fail_after(30):
        async with KubeClient(kube_ssa.connection()) as client:
            found = Discovery(client)
            await client.request(
                "POST",
                "/api/v1/namespaces/apps/configmaps",
                json=configmap("theirs"),
                params={"fieldManager": "kubectl"},
            )
            theirs = await fetch(found, ObjectRef.of(configmap("theirs")))
            assert theirs is not None
            assert prunable(theirs) == (False, "not managed by labctl (managers: kubectl)")
            await apply(found, configmap("shared"))
            await apply(found, configmap("shared"), manager="helm")
            shared = await fetch(found, ObjectRef.of(configmap("shared")))
            assert shared is not None
            assert prunable(shared) == (False, "also applied by helm")


async def test_a_rejected_object_names_the_reason(kube_ssa: KubeAPI) -> None:
    bad = configmap("bad")
    bad["metadata"]["annotations"] = {"test.labctl/reject": "spec.x: Invalid value"}  # type: ignore[index]
    with trio.fail_after(30):
        async with KubeClient(kube_ssa.connection()) as client:
            with pytest.raises(Invalid, match=r"spec\.x: Invalid value"):
                await apply(Discovery(client), bad)


async def test_workloads_are_waited_for(kube_ssa: KubeAPI) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"replicas": 2},
    }
    with trio.fail_after(30):
        async with KubeClient(kube_ssa.connection()) as client:
            found = Discovery(client)
            applied = await apply(found, deployment)
            assert readiness(applied) == (True, "2/2 ready")
            await wait_ready(found, [ObjectRef.of(deployment)])
            stuck = {
                **deployment,
                "metadata": {
                    **deployment["metadata"],
                    "name": "stuck",
                    "annotations": {"test.labctl/never-ready": "1"},
                },
            }
            await apply(found, stuck)
            with trio.move_on_after(1.5) as waited:
                await wait_ready(found, [ObjectRef.of(stuck)])
            assert waited.cancelled_caught


def test_readiness_rules() -> None:
    dep = {
        "kind": "Deployment",
        "metadata": {"generation": 2},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 3},
    }
    assert readiness(dep) == (False, "generation 2 not yet observed (1)")
    dep["status"]["observedGeneration"] = 2  # type: ignore[index]
    assert readiness(dep) == (True, "3/3 ready")
    dep["status"]["readyReplicas"] = 1  # type: ignore[index]
    assert readiness(dep) == (False, "1/3 ready, 3/3 updated")
    job = {
        "kind": "Job",
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]
        },
    }
    assert readiness(job) == (False, "failed: BackoffLimitExceeded")
    assert readiness({"kind": "ConfigMap"}) == (True, "exists")
    assert httpx  # the client's transport
