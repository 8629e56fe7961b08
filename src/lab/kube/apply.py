"""Server-side apply, prune and readiness over a :class:`lab.kube.KubeClient`.

- :func:`apply` sends one object as ``application/apply-patch+yaml`` (JSON is YAML) with a field
  manager (``labctl``) and ``force=true``: labctl owns the fields it declares, the API server
  merges them and creates the object when it does not exist.
- :func:`prunable` decides whether an object labctl applied before may be deleted: only when
  labctl is one of its managers and no other manager *applied* fields to it (an object another
  tool took over is left alone; controllers' ``Update`` entries, e.g. status, do not count).
- :func:`readiness` is pure: whether a Deployment, StatefulSet, DaemonSet or Job is ready, and
  why not; :func:`wait_ready` polls until every object is.

Paths come from API discovery (``/api/v1``, ``/apis/GROUP/VERSION``), cached per
:class:`Discovery`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import attrs
import trio

from lab.errors import Invalid, NotFound, Unavailable
from lab.kube.client import KubeClient
from lab.model.apps import ObjectRef

FIELD_MANAGER = "labctl"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
POLL_EVERY = 0.5


@attrs.frozen
class ApiResource:
    plural: str
    namespaced: bool


class Discovery:
    """``(apiVersion, kind)`` → plural and scope, from the API server's discovery documents."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._cache: dict[str, dict[str, ApiResource]] = {}

    async def resource(self, api_version: str, kind: str) -> ApiResource:
        """NotFound when the cluster does not serve ``kind`` in ``api_version``."""
        kinds = self._cache.get(api_version)
        if kinds is None:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                doc = await self.client.get(base)
            except NotFound:
                doc = {"resources": []}
            kinds = {}
            for item in doc.get("resources") or ():
                name = str(item.get("name", ""))
                if "/" in name or not item.get("kind"):
                    continue  # subresources (deployments/status)
                kinds[str(item["kind"])] = ApiResource(name, bool(item.get("namespaced")))
            self._cache[api_version] = kinds
        found = kinds.get(kind)
        if found is None:
            raise NotFound(
                f"the cluster does not serve {kind} in {api_version}",
                details={"fields": ["apiVersion"], "kind": kind},
            )
        return found

    async def path(self, ref: ObjectRef) -> str:
        res = await self.resource(ref.api_version, ref.kind)
        base = "/api/v1" if ref.api_version == "v1" else f"/apis/{ref.api_version}"
        if res.namespaced:
            if not ref.namespace:
                raise Invalid(f"{ref}: a {ref.kind} needs a namespace")
            base += f"/namespaces/{quote(ref.namespace, safe='')}"
        return f"{base}/{res.plural}/{quote(ref.name, safe='')}"


async def apply(
    discovery: Discovery,
    obj: Mapping[str, Any],
    *,
    manager: str = FIELD_MANAGER,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Server-side apply ``obj``; the object as the API server now holds it (or would)."""
    path = await discovery.path(ObjectRef.of(dict(obj)))
    params = {"fieldManager": manager, "force": "true"}
    if dry_run:
        params["dryRun"] = "All"
    resp = await discovery.client.request(
        "PATCH",
        path,
        content=json.dumps(obj, sort_keys=True).encode(),
        headers={"Content-Type": APPLY_CONTENT_TYPE},
        params=params,
    )
    try:
        answer: dict[str, Any] = resp.json()
    except ValueError as exc:
        raise Unavailable(f"PATCH {path}: the API server answered with no JSON") from exc
    return answer


async def fetch(discovery: Discovery, ref: ObjectRef) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        found: dict[str, Any] = await discovery.client.get(await discovery.path(ref))
    except NotFound:
        return None
    return found


async def delete(discovery: Discovery, ref: ObjectRef) -> bool:
    """Delete the object (foreground); False when it was already gone."""
    try:
        path = await discovery.path(ref)
        await discovery.client.request(
            "DELETE",
            path,
            json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"},
        )
    except NotFound:
        return False
    return True


def managers(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(manager, operation)`` of each ``metadata.managedFields`` entry."""
    entries = (obj.get("metadata") or {}).get("managedFields") or ()
    return [(str(e.get("manager", "")), str(e.get("operation", ""))) for e in entries]


def prunable(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> tuple[bool, str]:
    """Whether labctl may delete ``obj`` in a prune, and why not."""
    found = managers(obj)
    if not any(m == manager for m, _ in found):
        owners = ", ".join(sorted({m for m, _ in found})) or "nobody"
        return False, f"not managed by {manager} (managers: {owners})"
    others = sorted({m for m, op in found if m != manager and op == "Apply"})
    if others:
        return False, f"also applied by {', '.join(others)}"
    return True, ""


def readiness(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """``(ready, why not)`` for a workload; other kinds are ready once they exist."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if kind in ("Deployment", "StatefulSet", "DaemonSet") and (
        generation is not None and observed is not None and observed < generation
    ):
        return False, f"generation {generation} not yet observed ({observed})"
    if kind in ("Deployment", "StatefulSet"):
        want = int(spec.get("replicas", 1))
        ready = int(status.get("readyReplicas") or 0)
        updated = int(status.get("updatedReplicas") or 0)
        if ready < want or updated < want:
            return False, f"{ready}/{want} ready, {updated}/{want} updated"
        return True, f"{ready}/{want} ready"
    if kind == "DaemonSet":
        want = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        if ready < want or updated < want:
            return False, f"{ready}/{want} ready, {updated}/{want} updated"
        return True, f"{ready}/{want} ready"
    if kind == "Job":
        for cond in status.get("conditions") or ():
            if cond.get("type") == "Failed" and cond.get("status") == "True":
                return False, f"failed: {cond.get('message') or cond.get('reason') or ''}"
            if cond.get("type") == "Complete" and cond.get("status") == "True":
                return True, "complete"
        return False, f"{int(status.get('succeeded') or 0)} succeeded"
    return True, "exists"


WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


async def wait_ready(discovery: Discovery, refs: Iterable[ObjectRef]) -> None:
    """Poll until every workload in ``refs`` is ready (bound it with ``fail_after``).

    A Job that failed raises Invalid at once. Cancellation stops the polling.
    """
    waiting = [r for r in refs if r.kind in WORKLOADS]
    while waiting:
        still = []
        for ref in waiting:
            obj = await fetch(discovery, ref)
            ok, why = readiness(obj) if obj is not None else (False, "missing")
            if not ok:
                if ref.kind == "Job" and why.startswith("failed"):
                    raise Invalid(f"{ref} {why}")
                still.append(ref)
        waiting = still
        if waiting:
            await trio.sleep(POLL_EVERY)


async def not_ready(discovery: Discovery, refs: Iterable[ObjectRef]) -> list[str]:
    """``"Kind/ns/name: why"`` of each workload not ready now."""
    out = []
    for ref in refs:
        if ref.kind not in WORKLOADS:
            continue
        obj = await fetch(discovery, ref)
        ok, why = readiness(obj) if obj is not None else (False, "missing")
        if not ok:
            out.append(f"{ref}: {why}")
    return out
