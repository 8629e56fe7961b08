"""App releases (docs/apps.md): ``/api/apps/CLUSTER/NAMESPACE/NAME/...``.

RBAC ``apps:install|upgrade|rollback|uninstall|read`` on ``cluster/C/namespace/NS/app/NAME``;
every operation is audited with its revision numbers (never a value: secret fields are sealed,
the others stay in the release's history). The module comes as a built-in name and version or
as a ``.tar.gz`` (base64) with its sha256.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from typing import Any

from attrs import Factory, frozen
from quart import Blueprint, request

from lab.errors import Invalid, Unavailable
from lab.labd.access import rbac
from lab.labd.access.auth import principal, requires
from lab.labd.api.answers import created
from lab.labd.api.bodies import body
from lab.labd.apps.engine import AppEngine, Options, Outcome
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.model.apps import AppRevision, ReleaseKey
from lab.modules import Module, from_archive, load_builtin
from lab.runtime.logs import current_request_id

bp = Blueprint("apps", __name__)
RESOURCE = "cluster/{cluster}/namespace/{namespace}/app/{name}"
BASE = "/api/apps/<cluster>/<namespace>/<name>"
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
MAX_TIMEOUT = 3600.0


@frozen(kw_only=True)
class ModuleSource:
    """A built-in (``name``, ``version``) or an archive (base64 ``archive`` and ``sha256``)."""

    name: str = ""
    version: str = ""
    archive: str = ""
    sha256: str = ""


@frozen(kw_only=True)
class Deploy:
    module: ModuleSource
    values: dict[str, Any] = Factory(dict)
    reuse_values: bool = False
    install: bool = False
    dry_run: bool = False
    wait: bool = False
    timeout: float = 300.0
    rollback_on_failure: bool = False
    history_max: int = 0


@frozen(kw_only=True)
class Rollback:
    revision: int = 0
    dry_run: bool = False
    wait: bool = False
    timeout: float = 300.0


@frozen(kw_only=True)
class Uninstall:
    keep_history: bool = False
    delete_data: bool = False


@frozen(kw_only=True)
class Diff:
    module: ModuleSource | None = None
    values: dict[str, Any] = Factory(dict)
    reuse_values: bool = False


def engine() -> AppEngine:
    found = ctx().apps
    if found is None:
        raise Unavailable("this labd runs no app engine")
    return found


def release_key(cluster: str, namespace: str, name: str) -> ReleaseKey:
    for field, value in (("cluster", cluster), ("namespace", namespace), ("name", name)):
        if not _LABEL.fullmatch(value):
            raise Invalid(
                f"{field} {value[:80]!r} must be a DNS label", details={"fields": [f"path.{field}"]}
            )
    return ReleaseKey(cluster=cluster, namespace=namespace, name=name)


def module_of(source: ModuleSource) -> Module:
    if source.archive:
        try:
            data = base64.b64decode(source.archive, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Invalid(
                "module.archive is not base64", details={"fields": ["body.module.archive"]}
            ) from exc
        return from_archive(data, source.sha256, source="module archive")
    if not source.name:
        raise Invalid(
            "module needs a built-in name or an archive", details={"fields": ["body.module"]}
        )
    return load_builtin(source.name, source.version or None)


def options(
    *,
    dry_run: bool = False,
    wait: bool = False,
    timeout: float = 300.0,
    rollback_on_failure: bool = False,
    history_max: int = 0,
) -> Options:
    if not 0 < timeout <= MAX_TIMEOUT:
        raise Invalid(
            f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds", details={"fields": ["body.timeout"]}
        )
    if history_max < 0 or history_max > 1000:
        raise Invalid("history_max must be 0 to 1000", details={"fields": ["body.history_max"]})
    return Options(
        dry_run=dry_run,
        wait=wait,
        timeout=timeout,
        rollback_on_failure=rollback_on_failure,
        history_max=history_max or None,
        who=principal().subject,
        request_id=current_request_id() or "",
    )


def revision_view(rev: AppRevision) -> dict[str, Any]:
    """A revision as the API shows it: values with secrets as ``<sealed>``, no manifest."""
    return {
        "cluster": rev.key.cluster,
        "namespace": rev.key.namespace,
        "name": rev.key.name,
        "revision": rev.revision,
        "module": rev.module,
        "version": rev.version,
        "module_sha256": rev.module_digest,
        "values": rev.values,
        "manifest_sha256": rev.manifest_digest,
        "inventory": [r.as_dict() for r in rev.inventory],
        "status": rev.status,
        "operation": rev.operation,
        "description": rev.description,
        "requested_by": rev.requested_by,
        "request_id": rev.request_id,
        "created_at": rev.created_at.isoformat() if rev.created_at else None,
        "updated_at": rev.updated_at.isoformat() if rev.updated_at else None,
    }


def outcome_view(out: Outcome) -> dict[str, Any]:
    view: dict[str, Any] = {"dry_run": True}
    if out.revision is not None:
        view = revision_view(out.revision)
    view |= {"objects": out.rendered, "pruned": out.pruned, "kept": out.kept}
    if out.rolled_back_to is not None:
        view["rolled_back_to"] = out.rolled_back_to
    return view


async def _deploy(cluster: str, namespace: str, name: str, *, upgrade: bool) -> dict[str, Any]:
    key = release_key(cluster, namespace, name)
    req = await body(Deploy)
    module = module_of(req.module)
    opts = options(
        dry_run=req.dry_run,
        wait=req.wait,
        timeout=req.timeout,
        rollback_on_failure=req.rollback_on_failure,
        history_max=req.history_max,
    )
    annotate(module=module.spec.ref, module_sha256=module.digest, dry_run=req.dry_run)
    out = await engine().install(
        key,
        module,
        req.values,
        opts,
        upgrade=upgrade,
        reuse_values=req.reuse_values,
        or_install=req.install,
    )
    if out.revision is not None:
        annotate(revision=out.revision.revision, status=out.revision.status, pruned=out.pruned)
    return outcome_view(out)


@bp.post(f"{BASE}/install")
@requires("user", action="apps:install", resource=RESOURCE)
@created
async def install(cluster: str, namespace: str, name: str) -> dict[str, Any]:
    return await _deploy(cluster, namespace, name, upgrade=False)


@bp.post(f"{BASE}/upgrade")
@requires("user", action="apps:upgrade", resource=RESOURCE)
async def upgrade(cluster: str, namespace: str, name: str) -> dict[str, Any]:
    return await _deploy(cluster, namespace, name, upgrade=True)


@bp.post(f"{BASE}/rollback")
@requires("user", action="apps:rollback", resource=RESOURCE)
async def rollback(cluster: str, namespace: str, name: str) -> dict[str, Any]:
    key = release_key(cluster, namespace, name)
    req = await body(Rollback)
    opts = options(dry_run=req.dry_run, wait=req.wait, timeout=req.timeout)
    out = await engine().rollback(key, req.revision or None, opts)
    if out.revision is not None:
        annotate(revision=out.revision.revision, rolled_back_to=out.rolled_back_to)
    return outcome_view(out)


@bp.post(f"{BASE}/uninstall")
@requires("user", action="apps:uninstall", resource=RESOURCE)
async def uninstall(cluster: str, namespace: str, name: str) -> dict[str, Any]:
    key = release_key(cluster, namespace, name)
    req = await body(Uninstall)
    annotate(keep_history=req.keep_history, delete_data=req.delete_data)
    out = await engine().uninstall(
        key, options(), keep_history=req.keep_history, delete_data=req.delete_data
    )
    if out.revision is not None:
        annotate(revision=out.revision.revision)
    return outcome_view(out)


@bp.get(BASE)
@requires("user", action="apps:read", resource=RESOURCE)
async def status(cluster: str, namespace: str, name: str) -> dict[str, Any]:
    rev, objects = await engine().status(release_key(cluster, namespace, name))
    return {**revision_view(rev), "objects": objects}


@bp.get(f"{BASE}/history")
@requires("user", action="apps:read", resource=RESOURCE)
async def history(cluster: str, namespace: str, name: str) -> dict[str, Any]:
    key = release_key(cluster, namespace, name)
    revisions = await ctx().store.apps.history(key)
    return {"items": [revision_view(r) for r in revisions]}


@bp.post(f"{BASE}/diff")
@requires("user", action="apps:read", resource=RESOURCE)
async def diff(cluster: str, namespace: str, name: str) -> dict[str, Any]:
    key = release_key(cluster, namespace, name)
    req = await body(Diff)
    module = module_of(req.module) if req.module is not None else None
    old, new = await engine().diff(key, module, req.values, reuse_values=req.reuse_values)
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{name} (deployed)",
        tofile=f"{name} (new)",
    )
    return {"diff": "".join(lines)}


@bp.get("/api/apps")
@requires("user", action="apps:read", resource="cluster/*/namespace/*/app/*")
async def list_apps() -> dict[str, Any]:
    """The newest revision of every release the caller may read (``apps:read`` on each; the
    list itself needs ``apps:read`` on the pattern ``cluster/*/namespace/*/app/*``)."""
    who = principal()
    cluster = request.args.get("cluster") or None
    namespace = request.args.get("namespace") or None
    items = [
        revision_view(r)
        for r in await ctx().store.apps.releases(cluster=cluster, namespace=namespace)
        if rbac.decide(who.roles, "apps:read", r.key.resource).allowed
    ]
    return {"items": items}
