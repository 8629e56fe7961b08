"""The kmock API double with what labctl's apps need and kmock lacks (run it with
``run_kube_api(..., handler="tests.apps.kube_ssa:ApplyKubeAPI")``):

- server-side apply: ``PATCH`` with ``application/apply-patch+yaml`` creates the object when it
  does not exist and otherwise replaces the fields, requires ``fieldManager`` and records it in
  ``metadata.managedFields`` (operation ``Apply``) beside the other managers' entries; a create
  with ``?fieldManager=X`` records ``X`` (operation ``Update``);
- the workload resources (apps/v1, batch/v1, policy/v1, autoscaling/v2, PVCs) are served, and a
  "controller" marks every applied Deployment, StatefulSet, DaemonSet and Job ready at once
  (unless annotated ``test.labctl/never-ready``);
- an object annotated ``test.labctl/reject: "<message>"`` is refused with 422 (an upstream that
  rejects one object).
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from tests.kube.kmock_app import VERBS, LabKubeAPI, status

RESOURCES = {
    ("", "v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("", "v1", "serviceaccounts"): ("ServiceAccount", True),
    ("apps", "v1", "deployments"): ("Deployment", True),
    ("apps", "v1", "statefulsets"): ("StatefulSet", True),
    ("apps", "v1", "daemonsets"): ("DaemonSet", True),
    ("batch", "v1", "jobs"): ("Job", True),
    ("policy", "v1", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
    ("autoscaling", "v2", "horizontalpodautoscalers"): ("HorizontalPodAutoscaler", True),
    ("networking.k8s.io", "v1", "networkpolicies"): ("NetworkPolicy", True),
    ("rbac.authorization.k8s.io", "v1", "clusterroles"): ("ClusterRole", False),
}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)/(?P<name>[^/]+)$"
)


def _ready_status(obj: dict[str, Any]) -> dict[str, Any] | None:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if "test.labctl/never-ready" in annotations:
        return {}
    replicas = int((obj.get("spec") or {}).get("replicas", 1))
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet"):
        return {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
        }
    if kind == "DaemonSet":
        return {
            "observedGeneration": obj["metadata"]["generation"],
            "desiredNumberScheduled": 1,
            "numberReady": 1,
            "updatedNumberScheduled": 1,
        }
    if kind == "Job":
        return {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    return None


@attrs.define(kw_only=True)
class ApplyKubeAPI(LabKubeAPI):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for (group, version, plural), (kind, namespaced) in RESOURCES.items():
            self.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs=set(VERBS)
            )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        content_type = raw_request.headers.get("Content-Type", "")
        if raw_request.method == "PATCH" and content_type.startswith("application/apply-patch"):
            if not self.authenticated(raw_request):
                return status(401, "Unauthorized", "Unauthorized")
            return await self._apply(raw_request)
        if raw_request.method == "POST" and raw_request.query.get("fieldManager"):
            return await self._create_managed(raw_request)
        return await super().__call__(raw_request)

    async def _create_managed(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        """A plain create by another tool (``?fieldManager=kubectl``): recorded as Update."""
        body = yaml.safe_load(await raw_request.text())
        found = re.match(
            r"^/(?:api/v1|apis/([^/]+)/([^/]+))(?:/namespaces/([^/]+))?/([^/]+)$", raw_request.path
        )
        assert found is not None, raw_request.path
        group, version, namespace, plural = found.groups()
        resource = kmock.resource(group or "", version or "v1", plural)
        meta = body.setdefault("metadata", {})
        meta["managedFields"] = [
            {"manager": raw_request.query["fieldManager"], "operation": "Update"}
        ]
        meta.setdefault("uid", str(uuid.uuid4()))
        if namespace:
            meta["namespace"] = namespace
        self.objects[resource, namespace, meta["name"]] = body
        return aiohttp.web.json_response(body, status=201)

    async def _apply(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        found = _PATH.match(raw_request.path)
        if found is None:
            return status(404, "NotFound", f"no route {raw_request.path}")
        manager = raw_request.query.get("fieldManager")
        if not manager:
            return status(422, "Invalid", "fieldManager is required for apply requests")
        try:
            body = yaml.safe_load(await raw_request.text())
        except yaml.YAMLError as exc:
            return status(400, "BadRequest", f"error decoding YAML: {exc}")
        group = found["group"] or ""
        version = found["version"] or "v1"
        namespace, plural, name = found["ns"], found["plural"], found["name"]
        resource = kmock.resource(group, version, plural)
        if resource not in self.resources:
            return status(404, "NotFound", f"the server could not find the resource {plural}")
        meta = body.get("metadata") or {}
        if meta.get("name") != name:
            return status(400, "BadRequest", "the name of the object does not match the URL")
        reject = (meta.get("annotations") or {}).get("test.labctl/reject")
        if reject:
            kind = body.get("kind")
            return status(422, "Invalid", f'{kind} "{name}" is invalid: {reject}')
        key = (resource, namespace, name)
        existing = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get)
        current = None if existing is None or existing.deleted else existing.raw
        stored = copy.deepcopy(body)
        smeta = stored.setdefault("metadata", {})
        if namespace:
            smeta["namespace"] = namespace
        entries = [
            e
            for e in ((current or {}).get("metadata", {}).get("managedFields") or [])
            if not (e.get("manager") == manager and e.get("operation") == "Apply")
        ]
        entries.append({"manager": manager, "operation": "Apply", "apiVersion": body["apiVersion"]})
        smeta["managedFields"] = entries
        old_meta = (current or {}).get("metadata", {})
        smeta["uid"] = old_meta.get("uid") or str(uuid.uuid4())
        changed = current is None or {k: v for k, v in current.items() if k != "status"} != {
            k: v for k, v in stored.items() if k != "status"
        }
        generation = int(old_meta.get("generation", 0)) + (1 if changed else 0)
        smeta["generation"] = max(generation, 1)
        ready = _ready_status(stored)
        if ready is not None:
            stored["status"] = ready
        if raw_request.query.get("dryRun") != "All":
            self.objects[key] = stored
        return aiohttp.web.json_response(stored, status=201 if current is None else 200)
