"""The kinds labctl applies after labd's own: Cluster (``labctl clusters import``'s request),
Machine (the bastion's operator API, as ``labctl provision install``) and App. Each goes through
the same operation as its own command, so there is one code path per kind.

Secret values (a kubeconfig, an app's secret values) are read here from the file or the
environment variable the document names; they travel only in the operation's request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lab.errors import Conflict, Invalid, NotFound

if TYPE_CHECKING:
    from lab.apply.documents import Document
    from lab.client.api import LabClient


_QUIET: list[bool] = [False]
"""While ``labctl diff`` runs, only changes print (as ``~ kind/name what``)."""


def _say(kind: str, name: str, what: str, dry: bool) -> None:
    if _QUIET[0]:
        if not what.startswith(("unchanged", "absent")):
            print(f"~ {kind.lower()}/{name} would be {what}")
        return
    print(f"{kind.lower()}/{name} {what}{' (dry run)' if dry else ''}")


async def _cluster(client: LabClient, doc: Document, *, dry: bool, mode: str) -> int:
    from lab.apply.documents import invalid, resolve_ref

    path = f"/api/clusters/{quote(doc.name, safe='')}"
    try:
        found: dict[str, Any] = await client.get(path, params={"live": "false"})
        exists = True
    except NotFound:
        found, exists = {}, False
    if mode == "delete":
        if not exists:
            _say("Cluster", doc.name, "absent", dry)
            return 0
        if found.get("origin") == "imported":
            if not dry:
                await client.delete(path)
            _say("Cluster", doc.name, "deleted", dry)
        else:
            # A cluster labd created is taken down by its delete operation, keeping the
            # servers' data directories (labctl clusters delete, without --keep-data, wipes).
            if not dry:
                await client.post(f"{path}/delete", json={"keep_data": True})
            _say("Cluster", doc.name, "delete started (data kept)", dry)
        return 1
    if exists:
        _say("Cluster", doc.name, "unchanged", dry)
        return 0
    if "create" in doc.spec:
        create = dict(doc.spec["create"])
        if isinstance(create.get("datastore"), dict):
            where = "spec.create.datastore"
            create["datastore"] = resolve_ref(create["datastore"], doc.base_dir, where, doc.source)
        if not dry:
            op = await client.post(f"{path}/create", json=create)
            _say("Cluster", doc.name, f"create started (operation {op.get('id')})", dry)
        else:
            _say("Cluster", doc.name, "create started", dry)
        return 1
    ref = doc.spec.get("kubeconfig")
    if ref is None:
        raise invalid(
            doc.source,
            "spec.kubeconfig",
            f"is required to import cluster {doc.name} (or spec.create to create it)",
        )
    kubeconfig = resolve_ref(ref, doc.base_dir, "spec.kubeconfig", doc.source)
    if not dry:
        body: dict[str, Any] = {"name": doc.name, "kubeconfig": kubeconfig}
        if doc.spec.get("context"):
            body["context"] = doc.spec["context"]
        await client.post("/api/clusters/import", json=body)
    _say("Cluster", doc.name, "created", dry)
    return 1


def _bastion() -> Any:
    from lab.cli.provision import _Api

    return _Api(None, None)


def _machine(doc: Document, *, dry: bool, mode: str) -> int:
    from lab.apply.documents import invalid

    api = _bastion()
    mac = str(doc.spec["mac"])
    path = f"/api/machines/{quote(mac, safe='')}"
    try:
        found = api.call("GET", path)
    except Exception as exc:
        if getattr(exc, "code", "") != "not_found":
            raise
        if mode == "delete":
            _say("Machine", doc.name, "absent", dry)
            return 0
        raise invalid(
            doc.source,
            "spec.mac",
            f"the bastion has not discovered {mac} yet (the machine must PXE boot once)",
        ) from exc
    if mode == "delete":
        if not dry:
            api.call("DELETE", path)
        _say("Machine", doc.name, "deleted", dry)
        return 1
    role = doc.spec.get("role", "worker")
    if found.get("state") == "discovered":
        if not doc.spec.get("install", False):
            _say("Machine", doc.name, "unchanged (discovered, no install requested)", dry)
            return 0
        if not dry:
            api.call("POST", "/api/install", json={"mac": mac, "hostname": doc.name, "role": role})
        _say("Machine", doc.name, "install queued", dry)
        return 1
    wanted = (("hostname", doc.name), ("role", role))
    moved = [f for f, want in wanted if found.get(f) not in (None, want)]
    if moved:
        raise Conflict(
            f"{doc.source}: machine {mac} is {found.get('state')} as "
            f"{found.get('hostname')}/{found.get('role')}: {', '.join(moved)} change only by "
            "a reprovision (labctl provision reprovision)",
            details={"object": f"machine/{doc.name}", "fields": [f"spec.{f}" for f in moved]},
        )
    _say("Machine", doc.name, "unchanged", dry)
    return 0


def _module_ref(doc: Document) -> str:
    """``spec.module`` (a built-in name, or a directory or archive relative to the document)
    with ``spec.version``, as ``labctl apps --module`` takes it."""
    word = str(doc.spec["module"])
    if "/" in word or word.startswith(".") or word.endswith((".tar.gz", ".tgz")):
        given = Path(word).expanduser()
        word = str(given if given.is_absolute() else doc.base_dir / given)
    version = doc.spec.get("version")
    return f"{word}@{version}" if version else word


def _values(doc: Document) -> dict[str, Any]:
    """``spec.values`` with each ``spec.secretValues`` entry (a dotted path: a reference)
    read now and set in place."""
    from lab.apply.documents import resolve_ref

    values: dict[str, Any] = json.loads(json.dumps(doc.spec.get("values") or {}))
    for path, ref in (doc.spec.get("secretValues") or {}).items():
        where = f"spec.secretValues.{path}"
        value = resolve_ref(ref, doc.base_dir, where, doc.source).rstrip("\n")
        node = values
        *parents, leaf = str(path).split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise Invalid(f"{doc.source}: {where}: {part} is not a mapping in spec.values")
        node[leaf] = value
    return values


async def _app(client: LabClient, doc: Document, *, dry: bool, mode: str) -> int:
    """An app release, through the routes ``labctl apps`` uses: installed when missing,
    upgraded when labd's diff of the rendered objects (or the module) differs, uninstalled by
    prune or delete."""
    from lab.cli.apps_cmd import base, module_payload

    path = base(str(doc.spec["cluster"]), str(doc.spec.get("namespace", "default")), doc.name)
    try:
        current: dict[str, Any] | None = await client.get(path)
    except NotFound:
        current = None
    if current is not None and current.get("status") == "uninstalled":
        current = None
    if mode == "delete":
        if current is None:
            _say("App", doc.name, "absent", dry)
            return 0
        if not dry:
            await client.post(f"{path}/uninstall", json={})
        _say("App", doc.name, "uninstalled", dry)
        return 1
    module = module_payload(_module_ref(doc), str(doc.spec.get("sha256", "")))
    values = _values(doc)
    if current is None:
        if not dry:
            await client.post(f"{path}/install", json={"module": module, "values": values})
        _say("App", doc.name, "installed", dry)
        return 1
    diff = await client.post(f"{path}/diff", json={"module": module, "values": values})
    if "name" in module:
        same_module = (current.get("module"), current.get("version")) == (
            module["name"],
            module["version"],
        )
    else:
        same_module = current.get("module_sha256") == module["sha256"]
    if not diff.get("diff") and same_module:
        _say("App", doc.name, "unchanged", dry)
        return 0
    if not dry:
        await client.post(f"{path}/upgrade", json={"module": module, "values": values})
    _say("App", doc.name, "upgraded", dry)
    return 1


async def apply_external(
    client: LabClient, docs: list[Document], *, dry: bool, mode: str = "apply"
) -> int:
    """Apply (or delete) Machine, Cluster and App documents; the number of changes."""
    changes = 0
    for doc in docs:
        if doc.kind == "Cluster":
            changes += await _cluster(client, doc, dry=dry, mode=mode)
        elif doc.kind == "Machine":
            changes += _machine(doc, dry=dry, mode=mode)
        else:
            changes += await _app(client, doc, dry=dry, mode=mode)
    return changes


async def prune_external(client: LabClient, items: list[dict[str, Any]], *, dry: bool) -> int:
    """Remove the Machine, Cluster and App objects a set recorded and the files dropped."""
    from lab.apply.documents import Document, Source

    changes = 0
    for item in items:
        doc = Document(
            kind=item["kind"],
            name=item["name"],
            spec=dict(item.get("spec") or {}),
            source=Source(file="labd", index=0),
        )
        changes += await apply_external(client, [doc], dry=dry, mode="delete")
    return changes


async def diff_external(
    client: LabClient, docs: list[Document], pruned: list[dict[str, Any]]
) -> bool:
    """Print what applying the other kinds would do; whether anything would change."""
    _QUIET[0] = True
    try:
        changes = await apply_external(client, docs, dry=True)
        changes += await prune_external(client, pruned, dry=True)
    finally:
        _QUIET[0] = False
    return changes > 0
