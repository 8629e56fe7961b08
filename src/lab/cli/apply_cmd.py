"""labctl apply, diff and delete -f: the lab as code (docs/apply.md).

labd applies Role, User and Server documents in one transaction (``POST /api/apply``); labctl
then applies Machine, Cluster and App documents through the same operations as ``labctl
provision``, ``clusters`` and ``apps``. A ``--set NAME`` is recorded in labd, so ``--prune``
removes exactly the objects that set applied before and the files no longer hold.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import Parameter

if TYPE_CHECKING:
    from lab.apply.documents import Document
    from lab.client.api import LabClient

FilesOpt = Annotated[
    tuple[str, ...],
    Parameter(
        name=["-f", "--filename"],
        help="A file, a directory of .yaml/.yml/.json files, or - for standard input (repeatable).",
        negative=(),
    ),
]
RecursiveOpt = Annotated[
    bool, Parameter(name=["-R", "--recursive"], negative=(), help="Read directories recursively.")
]
DryRunOpt = Annotated[
    Literal["none", "client", "server"],
    Parameter(
        name="--dry-run",
        help="client: check the files only; server: labd plans the apply (RBAC, conflicts, "
        "prune) and writes nothing.",
    ),
]
SetOpt = Annotated[
    str | None,
    Parameter(
        name="--set", help="Record what this apply declares as the named set, in labd (prune)."
    ),
]
PruneOpt = Annotated[
    bool,
    Parameter(
        negative=(),
        help="With --set: remove what the set applied before that the files no longer hold "
        "(roles deleted, users disabled, server labels removed, apps uninstalled).",
    ),
]
ForceOpt = Annotated[
    bool,
    Parameter(
        name="--force-conflicts",
        negative=(),
        help="Write even when an object moved since its resourceVersion, or belongs to "
        "another set.",
    ),
]


def _wire(doc: Document) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": doc.kind,
        "name": doc.name,
        "spec": doc.spec,
        "source": {"file": doc.source.file, "index": doc.source.index},
    }
    if doc.labels is not None:
        obj["labels"] = doc.labels
    if doc.resource_version is not None:
        obj["resource_version"] = doc.resource_version
    return obj


async def send(
    client: LabClient,
    docs: list[Document],
    *,
    set_name: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
    force: bool = False,
    mode: str = "apply",
) -> dict[str, Any]:
    """One ``POST /api/apply``; labd's answer."""
    answer: dict[str, Any] = await client.post(
        "/api/apply",
        json={
            "objects": [_wire(d) for d in docs],
            "set": set_name,
            "prune": prune,
            "dry_run": dry_run,
            "force_conflicts": force,
            "mode": mode,
        },
    )
    return answer


def _line(kind: str, name: str, action: str, fields: list[str], dry: bool) -> str:
    named = fields and fields != ["*"] and action != "unchanged"
    shown = f" ({', '.join(fields)})" if named else ""
    return f"{kind.lower()}/{name} {action}{shown}{' (dry run)' if dry else ''}"


async def run_apply(
    paths: tuple[str, ...],
    *,
    recursive: bool,
    dry_run: str,
    set_name: str | None,
    prune: bool,
    force: bool,
    mode: str = "apply",
) -> int:
    """Apply (or delete) the documents of ``paths``; prints one line per object and returns
    the number of changes."""
    from lab.apply.documents import read_documents
    from lab.cli.apply_external import apply_external, prune_external
    from lab.client.api import LabClient

    docs = read_documents(paths or _missing(), recursive=recursive)
    if dry_run == "client":
        for doc in docs:
            print(f"{doc.kind.lower()}/{doc.name} checked (dry run)")
        return 0
    dry = dry_run == "server"
    async with LabClient.from_settings() as client:
        answer = await send(
            client,
            docs,
            set_name=set_name,
            prune=prune,
            dry_run=dry,
            force=force,
            mode=mode,
        )
        for item in answer["results"]:
            print(_line(item["kind"], item["name"], item["action"], item["fields"], dry))
        changes = int(answer["changes"])
        outside = [d for d in docs if d.kind in ("Machine", "Cluster", "App")]
        changes += await apply_external(client, outside, dry=dry, mode=mode)
        changes += await prune_external(client, answer["prune_external"], dry=dry)
    print(f"{changes} change{'s' if changes != 1 else ''}{' (dry run)' if dry else ''}")
    return changes


def _missing() -> tuple[str, ...]:
    from lab.errors import Invalid

    raise Invalid("give the files with -f FILE|DIR|-", details={"fields": ["filename"]})


async def apply_command(
    *,
    filename: FilesOpt = (),
    recursive: RecursiveOpt = False,
    dry_run: DryRunOpt = "none",
    set_name: SetOpt = None,
    prune: PruneOpt = False,
    force_conflicts: ForceOpt = False,
) -> None:
    """Make labd's roles, users, server labels, machines, clusters and apps what the files say.

    Documents are apiVersion: lab/v1 with kind Role, User, Server (or ServerLabels), Machine,
    Cluster or App (docs/apply.md; a JSON Schema per kind in schema/apply/). Roles, users and
    labels change in one transaction: all or nothing. An object whose metadata.resourceVersion
    is stale is refused (409, naming the fields that moved) unless --force-conflicts.

    Example: labctl apply -f lab/ --prune --set lab

    Parameters
    ----------
    filename
        Files, directories or - (standard input).
    """
    from lab.runtime.exits import handle

    with handle():
        await run_apply(
            filename,
            recursive=recursive,
            dry_run=dry_run,
            set_name=set_name,
            prune=prune,
            force=force_conflicts,
        )


async def delete_command(
    *,
    filename: FilesOpt = (),
    recursive: RecursiveOpt = False,
    dry_run: DryRunOpt = "none",
) -> None:
    """Remove what the files declare: roles deleted, users disabled, their labels taken off
    the servers, clusters forgotten, apps uninstalled.

    Example: labctl delete -f lab/users/old-admin.yaml

    Parameters
    ----------
    filename
        Files, directories or - (standard input).
    """
    from lab.runtime.exits import handle

    with handle():
        await run_apply(
            filename,
            recursive=recursive,
            dry_run=dry_run,
            set_name=None,
            prune=False,
            force=False,
            mode="delete",
        )


async def diff_command(
    *,
    filename: FilesOpt = (),
    recursive: RecursiveOpt = False,
    set_name: SetOpt = None,
    prune: PruneOpt = False,
) -> None:
    """Show what apply would change: a unified diff per object (labd plans it, as apply
    --dry-run=server). Exits 0 when nothing would change, 1 when something would, >1 on error.

    Example: labctl diff -f lab/ --prune --set lab

    Parameters
    ----------
    filename
        Files, directories or - (standard input).
    """
    from lab.errors import LabError
    from lab.runtime.exits import EXIT_USAGE, handle

    try:
        with handle():
            changed = await _diff(filename, recursive=recursive, set_name=set_name, prune=prune)
    except SystemExit as exc:
        # kubectl diff: 1 means "differences", so every error is above 1.
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
        raise SystemExit(max(code, EXIT_USAGE)) from None
    except LabError:  # pragma: no cover - handle() turns every LabError into SystemExit
        raise
    raise SystemExit(1 if changed else 0)


async def _diff(
    paths: tuple[str, ...], *, recursive: bool, set_name: str | None, prune: bool
) -> bool:
    from lab.apply.diffs import unified
    from lab.apply.documents import from_document, read_documents
    from lab.cli.apply_external import diff_external
    from lab.client.api import LabClient

    docs = read_documents(paths or _missing(), recursive=recursive)
    changed = False
    async with LabClient.from_settings() as client:
        answer = await send(client, docs, set_name=set_name, prune=prune, dry_run=True)
        for item in answer["results"]:
            if item["action"] == "unchanged":
                continue
            before = from_document(item["before"]) if item["before"] else None
            after = from_document(item["after"]) if item["after"] else None
            label = f"{item['kind'].lower()}/{item['name']}"
            sys.stdout.write(unified(before, after, label))
            changed = True
        outside = [d for d in docs if d.kind in ("Machine", "Cluster", "App")]
        changed |= await diff_external(client, outside, answer["prune_external"])
    return changed
