"""Applying a revision's objects to the cluster, pruning what the release no longer has, and
waiting for workloads (over :mod:`lab.kube.apply`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import trio

from lab.errors import LabError
from lab.kube.apply import Discovery, apply, delete, fetch, not_ready, prunable, wait_ready
from lab.model.apps import AppRevision, ObjectRef


class ApplyFailed(LabError):
    """Applying (or waiting for) the objects of a revision failed; ``applied`` lists the
    objects that were applied before (the failed revision's inventory)."""

    status = 422
    code = "apply_failed"

    def __init__(self, message: str, applied: list[ObjectRef]) -> None:
        super().__init__(message)
        self.applied = applied


async def ensure_namespace(found: Discovery, namespace: str) -> None:
    try:
        await apply(
            found, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    except LabError as exc:
        raise ApplyFailed(f"namespace {namespace}: {exc.message}", []) from exc


async def apply_objects(
    found: Discovery, objects: Sequence[dict[str, Any]], refs: Sequence[ObjectRef]
) -> None:
    """Apply each object in order; ApplyFailed names the first refused and what went before."""
    applied: list[ObjectRef] = []
    for obj, ref in zip(objects, refs, strict=True):
        try:
            await apply(found, obj)
        except LabError as exc:
            raise ApplyFailed(f"{ref}: {exc.message}", applied) from exc
        applied.append(ref)


async def wait_for(found: Discovery, refs: Sequence[ObjectRef], seconds: float) -> None:
    """Wait until the workloads among ``refs`` are ready; ApplyFailed naming those that are
    not after ``seconds`` (or a Job that failed)."""
    try:
        with trio.fail_after(seconds):
            await wait_ready(found, refs)
    except trio.TooSlowError:
        waiting = await not_ready(found, refs)
        raise ApplyFailed(
            f"not ready after {seconds:g}s: {'; '.join(waiting)}", list(refs)
        ) from None
    except LabError as exc:
        raise ApplyFailed(exc.message, list(refs)) from exc


async def run_hooks(
    found: Discovery,
    event: str,
    hooks: Mapping[str, Sequence[dict[str, Any]]],
    seconds: float,
) -> None:
    """Run the module's ``event`` hooks (e.g. ``pre-upgrade``): each object is deleted if it
    exists (a Job runs anew; its spec is immutable), applied, and waited for. Hook objects are
    outside the release's inventory. ApplyFailed names the hook."""
    objects = list(hooks.get(event, ()))
    if not objects:
        return
    refs = [ObjectRef.of(o) for o in objects]
    try:
        with trio.fail_after(seconds):
            for ref in refs:
                if await delete(found, ref):
                    while await fetch(found, ref) is not None:  # noqa: ASYNC110 - polling the API server
                        await trio.sleep(0.2)
    except trio.TooSlowError:
        raise ApplyFailed(f"hook {event}: the previous run is still being deleted", []) from None
    try:
        await apply_objects(found, objects, refs)
        await wait_for(found, refs, seconds)
    except ApplyFailed as exc:
        raise ApplyFailed(f"hook {event}: {exc.message}", []) from exc


async def prune(
    found: Discovery,
    refs: Sequence[ObjectRef],
    *previous: AppRevision | None,
    delete_data: bool = False,
) -> tuple[list[str], list[str]]:
    """Delete the objects of the ``previous`` revisions' inventories that ``refs`` lacks: never
    a data object (unless ``delete_data``), never one another manager applied. Returns
    (pruned, kept with the reason)."""
    wanted = {r.key for r in refs}
    candidates: dict[tuple[str, str, str, str], ObjectRef] = {}
    for rev in previous:
        for ref in rev.inventory if rev is not None else ():
            if ref.key not in wanted:
                candidates.setdefault(ref.key, ref)
    pruned, kept = [], []
    for ref in candidates.values():
        if ref.data and not delete_data:
            kept.append(f"{ref} (data)")
            continue
        live = await fetch(found, ref)
        if live is None:
            continue
        ok, why = prunable(live)
        if not ok:
            kept.append(f"{ref} ({why})")
            continue
        await delete(found, ref)
        pruned.append(str(ref))
    return pruned, kept
