"""App releases: install, upgrade, rollback and uninstall of modules on clusters (docs/apps.md).

Each operation holds the release's lock, a lease renewed while it runs (a killed labd leaves a
lease that runs out; the sweeper then fails the revision it left, audited, and the next
command proceeds). A revision is recorded ``pending-*`` before anything is applied, then
``deployed`` (the previous deployed one ``superseded``) or ``failed`` with the objects it got
to apply as its inventory, so a later rollback or upgrade prunes them too.

Secret values and manifests that carry them are sealed in labd's secrets store
(:mod:`lab.labd.apps.sealing`); neither reaches the database in clear, a log line or an audit
detail. Applying, pruning and waiting are :mod:`lab.labd.apps.objects`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import trio
import yaml

from lab.errors import Conflict, LabError, NotFound, Unavailable
from lab.kube import KubeClient, KubeConnection
from lab.kube.apply import Discovery, apply, fetch, readiness
from lab.labd.apps import archives, certificates
from lab.labd.apps.objects import (
    ApplyFailed,
    apply_objects,
    ensure_namespace,
    prune,
    run_hooks,
    wait_for,
)
from lab.labd.apps.rendering import check_requirements, render_off_loop
from lab.labd.apps.sealing import ReleaseSecrets, redact_manifest
from lab.labd.audit.entries import record
from lab.model.apps import PENDING, AppRevision, ObjectRef, ReleaseKey
from lab.modules import Cluster, Module, Release, check_values
from lab.modules.values import merge
from lab.store import AppReleaseRepository

if TYPE_CHECKING:
    from lab.labd.context import LabdContext

log = logging.getLogger(__name__)
SWEEP_EVERY = 2.0


def now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class Options:
    """How an operation runs (the CLI's flags)."""

    dry_run: bool = False
    wait: bool = False
    timeout: float = 300.0
    rollback_on_failure: bool = False
    history_max: int | None = None
    who: str = ""
    request_id: str = ""


@attrs.frozen(kw_only=True)
class Outcome:
    """What an operation did: the revision it wrote (and the one it rolled back to)."""

    revision: AppRevision | None
    rendered: list[str] = attrs.Factory(list)
    pruned: list[str] = attrs.Factory(list)
    kept: list[str] = attrs.Factory(list)
    rolled_back_to: int | None = None


class AppEngine:
    """Owned by labd's root nursery (:meth:`run` sweeps expired leases); the routes call the
    operations, which run inside the request."""

    def __init__(self, context: LabdContext, replica: str) -> None:
        self.context = context
        self.replica = replica
        self.sealed = ReleaseSecrets(context.secrets)

    @property
    def repo(self) -> AppReleaseRepository:
        return self.context.store.apps

    @property
    def lease(self) -> float:
        return float(self.context.config.app_lease)

    # -- leases -------------------------------------------------------------------------------

    async def run(
        self, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Fail what a previous run of this replica left pending, then every operation whose
        lease ran out, every few seconds, until ``shutdown``."""
        await self.expire(owner=f"{self.replica}/")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep)
            task_status.started()
            await shutdown.wait()
            nursery.cancel_scope.cancel()

    async def _sweep(self) -> None:
        while True:
            try:
                await self.expire()
            except LabError:
                log.warning("could not check app releases' leases", exc_info=True)
            await trio.sleep(SWEEP_EVERY)

    async def expire(self, owner: str | None = None, reason: str = "") -> None:
        """Fail (and audit) the revisions that operations whose lease ran out left pending
        (or, with ``owner``, those of that owner), and free their releases."""
        for gone in await self.repo.expire(now=now(), owner=owner, reason=reason):
            if gone.revision is None:
                continue  # the operation stopped before it wrote a revision: nothing to fail
            why = reason or f"interrupted: the lease of {gone.owner} ran out"
            log.warning("app %s: revision %s failed: %s", gone.key, gone.revision, why)
            await record(
                self.context,
                action=f"apps:{gone.operation}",
                resource=gone.key.resource,
                result="error",
                user=gone.who,
                details={"revision": gone.revision, "status": "failed", "error": why},
            )

    @asynccontextmanager
    async def _locked(self, key: ReleaseKey, operation: str, opts: Options) -> AsyncIterator[str]:
        """Hold the release (renewing its lease) for the block; its owner id. However the block
        ends (an error, a cancellation, a lost lease), a revision it left pending is failed
        before the release is freed: nothing stays pending."""
        await self.expire()
        owner = f"{self.replica}/{uuid.uuid4().hex[:12]}"
        await self.repo.lock(
            key,
            owner=owner,
            operation=operation,
            who=opts.who,
            now=now(),
            lease_until=now() + timedelta(seconds=self.lease),
            history_max=opts.history_max,
        )
        finished = False
        reason = f"{operation} stopped before it finished"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew, key, owner, nursery.cancel_scope)
                yield owner
                finished = True
                nursery.cancel_scope.cancel()
            if not finished:
                reason = f"{operation} stopped: the operation lost its lease"
                raise Conflict(f"app {key}: the operation lost its lease and was stopped")
        except BaseException as exc:
            reason = f"{operation} failed: {_message(exc)}"
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self.expire(owner=owner, reason=reason)
                await self.repo.unlock(key, owner)

    async def _renew(self, key: ReleaseKey, owner: str, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.lease / 3)
            if not await self.repo.renew(
                key, owner, lease_until=now() + timedelta(seconds=self.lease)
            ):
                log.warning("app %s: lease lost; stopping the operation here", key)
                scope.cancel()
                return

    # -- the cluster ----------------------------------------------------------------------------

    async def connection(self, cluster: str) -> KubeConnection:
        """The cluster's API server as labd reaches it; NotFound for an unknown cluster."""
        return await self.context.clusters.connection(cluster)

    # -- operations -------------------------------------------------------------------------------

    async def install(
        self,
        key: ReleaseKey,
        module: Module,
        values: dict[str, Any],
        opts: Options,
        *,
        upgrade: bool = False,
        reuse_values: bool = False,
        or_install: bool = False,
    ) -> Outcome:
        """Install (``upgrade=False``) or upgrade ``key`` to ``module`` with ``values``.

        Install: Conflict when a revision is deployed (use upgrade); a failed or uninstalled
        release is installed again. Upgrade: NotFound when nothing is deployed, unless
        ``or_install`` (``upgrade --install``: then it installs).
        """
        operation = "upgrade" if upgrade else "install"
        async with self._locked(key, operation, opts) as owner:
            history = await self.repo.history(key)
            deployed = next((r for r in reversed(history) if r.status == "deployed"), None)
            if not upgrade and deployed is not None:
                raise Conflict(
                    f"app {key} is installed (revision {deployed.revision}): use "
                    f"labctl apps upgrade {key.name}",
                    details={"revision": deployed.revision},
                )
            if upgrade and deployed is None and or_install:
                operation = "install"
            elif upgrade and deployed is None:
                raise NotFound(
                    f"app {key} has no deployed revision to upgrade: install it "
                    "(or upgrade --install)",
                    details={"resource": key.resource},
                )
            if reuse_values and deployed is not None:
                values = merge(await self.sealed.values_of(deployed), values)
            await check_requirements(self.repo, key, module)
            values = await certificates.fill(self.context, module, values, key)
            checked = check_values(module.spec.parameters, values)
            latest = history[-1] if history else None
            return await self._deploy(
                key, owner, operation, module, checked, opts, deployed=deployed, latest=latest
            )

    async def _deploy(
        self,
        key: ReleaseKey,
        owner: str,
        operation: str,
        module: Module,
        values: dict[str, Any],
        opts: Options,
        *,
        deployed: AppRevision | None,
        latest: AppRevision | None,
    ) -> Outcome:
        number = await self.repo.next_revision(key)
        async with KubeClient(await self.connection(key.cluster)) as client:
            version = str((await client.version()).get("gitVersion", ""))
            rendered = await render_off_loop(
                module,
                values,
                release=Release(name=key.name, namespace=key.namespace, revision=number),
                cluster=Cluster(name=key.cluster, version=version),
            )
            objects, text, digest = list(rendered.objects), rendered.manifest, rendered.digest
            hooks = rendered.hooks
            refs = [
                attrs.evolve(
                    ObjectRef.of(o), data=module.spec.is_data(o["kind"], o["metadata"]["name"])
                )
                for o in objects
            ]
            found = Discovery(client)
            if opts.dry_run:
                for obj in objects:
                    await apply(found, obj, dry_run=True)
                return Outcome(revision=None, rendered=[str(r) for r in refs])
            await archives.keep(self.context, module, who=opts.who)
            public, secret_ref, column = await self.sealed.seal(
                key, number, module, values, text, objects
            )
            rev = await self.repo.add(
                AppRevision(
                    key=key,
                    revision=number,
                    module=module.spec.name,
                    version=module.spec.version,
                    module_digest=module.digest,
                    values=public,
                    secret_ref=secret_ref,
                    manifest=column,
                    manifest_digest=digest,
                    status=PENDING[operation],
                    operation=operation,  # type: ignore[arg-type]
                    description=f"{operation} in progress",
                    requested_by=opts.who,
                    request_id=opts.request_id,
                    created_at=now(),
                ),
                owner,
            )
            try:
                await ensure_namespace(found, key.namespace)
                await run_hooks(found, f"pre-{operation}", hooks, opts.timeout)
                await apply_objects(found, objects, refs)
                pruned, kept = await prune(found, refs, deployed, latest)
                if opts.wait:
                    await wait_for(found, refs, opts.timeout)
                await run_hooks(found, f"post-{operation}", hooks, opts.timeout)
            except ApplyFailed as exc:
                failed = await self.repo.set_status(
                    key,
                    rev.revision,
                    owner,
                    status="failed",
                    at=now(),
                    description=exc.message,
                    inventory=tuple(exc.applied),
                )
                if opts.rollback_on_failure:
                    return await self._undo(found, key, owner, failed, deployed, opts, exc)
                raise
            done = await self.repo.set_status(
                key,
                rev.revision,
                owner,
                status="deployed",
                at=now(),
                description=f"{operation} complete",
                inventory=tuple(refs),
            )
            await self.sealed.forget(await self.repo.trim(key, owner))
            return Outcome(revision=done, rendered=[str(r) for r in refs], pruned=pruned, kept=kept)

    async def _undo(
        self,
        found: Discovery,
        key: ReleaseKey,
        owner: str,
        failed: AppRevision,
        deployed: AppRevision | None,
        opts: Options,
        error: ApplyFailed,
    ) -> Outcome:
        """--rollback-on-failure: back to ``deployed`` (a new revision copying it), or, for a
        first install, remove what was applied. Raises ApplyFailed naming both."""
        if deployed is None:
            await prune(found, [], failed)
            raise ApplyFailed(
                f"{error.message}; rolled back: the objects applied were removed", error.applied
            )
        target = await self._copy(key, owner, deployed, "rollback", opts)
        try:
            objects = [d for d in yaml.safe_load_all(await self.sealed.manifest_of(deployed)) if d]
            await apply_objects(found, objects, [ObjectRef.of(o) for o in objects])
            await prune(found, list(deployed.inventory), failed)
        except LabError as exc:
            await self.repo.set_status(
                key,
                target.revision,
                owner,
                status="failed",
                at=now(),
                description=f"rollback failed: {exc.message}",
            )
            raise ApplyFailed(
                f"{error.message}; the rollback failed too: {exc.message}", error.applied
            ) from exc
        await self.repo.set_status(
            key,
            target.revision,
            owner,
            status="deployed",
            at=now(),
            description=f"rolled back to {deployed.revision} after: {error.message}",
            inventory=deployed.inventory,
        )
        raise ApplyFailed(
            f"{error.message}; rolled back to revision {deployed.revision} "
            f"(now revision {target.revision})",
            error.applied,
        )

    async def _copy(
        self, key: ReleaseKey, owner: str, source: AppRevision, operation: str, opts: Options
    ) -> AppRevision:
        """A new pending revision with ``source``'s module, values and manifest (its secrets
        sealed again under the new revision)."""
        number = await self.repo.next_revision(key)
        return await self.repo.add(
            attrs.evolve(
                source,
                revision=number,
                secret_ref=await self.sealed.copy(source, key, number),
                status=PENDING[operation],
                operation=operation,  # type: ignore[arg-type]
                description=f"{operation} to {source.revision} in progress",
                requested_by=opts.who,
                request_id=opts.request_id,
                created_at=now(),
            ),
            owner,
        )

    async def rollback(self, key: ReleaseKey, revision: int | None, opts: Options) -> Outcome:
        """A new revision copying ``revision`` (default: the one before the newest deployed);
        the objects the current state has and it lacks are pruned (those a failed upgrade
        added included)."""
        async with self._locked(key, "rollback", opts) as owner:
            history = await self.repo.history(key)
            if not history:
                raise NotFound(f"app {key} has no revisions", details={"resource": key.resource})
            deployed = next((r for r in reversed(history) if r.status == "deployed"), None)
            if revision is None:
                older = [r for r in history if deployed is None or r.revision < deployed.revision]
                candidates = [r for r in older if r.status in ("superseded", "deployed")]
                if not candidates:
                    raise NotFound(f"app {key} has no earlier revision to roll back to")
                target = candidates[-1]
            else:
                chosen = next((r for r in history if r.revision == revision), None)
                if chosen is None:
                    raise NotFound(
                        f"app {key} has no revision {revision} (kept: "
                        f"{', '.join(str(r.revision) for r in history)})"
                    )
                target = chosen
            if opts.dry_run:
                return Outcome(revision=target, rendered=[str(r) for r in target.inventory])
            new = await self._copy(key, owner, target, "rollback", opts)
            async with KubeClient(await self.connection(key.cluster)) as client:
                found = Discovery(client)
                objects = [
                    d for d in yaml.safe_load_all(await self.sealed.manifest_of(target)) if d
                ]
                hooks = await self._hooks(client, key, target, new.revision)
                try:
                    await ensure_namespace(found, key.namespace)
                    await run_hooks(found, "pre-rollback", hooks, opts.timeout)
                    await apply_objects(found, objects, [ObjectRef.of(o) for o in objects])
                    pruned, kept = await prune(found, list(target.inventory), deployed, history[-1])
                    if opts.wait:
                        await wait_for(found, list(target.inventory), opts.timeout)
                    await run_hooks(found, "post-rollback", hooks, opts.timeout)
                except LabError as exc:
                    await self.repo.set_status(
                        key, new.revision, owner, status="failed", at=now(), description=exc.message
                    )
                    raise
            done = await self.repo.set_status(
                key,
                new.revision,
                owner,
                status="deployed",
                at=now(),
                description=f"rollback to {target.revision} complete",
                inventory=target.inventory,
            )
            await self.sealed.forget(await self.repo.trim(key, owner))
            return Outcome(
                revision=done,
                rendered=[str(r) for r in target.inventory],
                pruned=pruned,
                kept=kept,
                rolled_back_to=target.revision,
            )

    async def _hooks(
        self, client: KubeClient, key: ReleaseKey, rev: AppRevision, revision: int
    ) -> Mapping[str, tuple[dict[str, Any], ...]]:
        """The hooks of ``rev``'s module rendered with its values (as revision ``revision``);
        none when the module is no longer kept (logged)."""
        try:
            module = await archives.module_of(self.context, rev)
        except NotFound as exc:
            log.warning("app %s: no hooks run: %s", key, exc.message)
            return {}
        if not module.spec.hooks:
            return {}
        version = str((await client.version()).get("gitVersion", ""))
        rendered = await render_off_loop(
            module,
            await self.sealed.values_of(rev),
            release=Release(name=key.name, namespace=key.namespace, revision=revision),
            cluster=Cluster(name=key.cluster, version=version),
        )
        return rendered.hooks

    async def uninstall(
        self, key: ReleaseKey, opts: Options, *, keep_history: bool, delete_data: bool
    ) -> Outcome:
        """Delete every object of the release (data objects only with ``delete_data``); the
        history is forgotten unless ``keep_history`` (then the newest revision is
        ``uninstalled``)."""
        async with self._locked(key, "uninstall", opts) as owner:
            history = await self.repo.history(key)
            if not history:
                raise NotFound(f"app {key} is not installed", details={"resource": key.resource})
            live = [r for r in history if r.status in ("deployed", "failed")]
            async with KubeClient(await self.connection(key.cluster)) as client:
                found = Discovery(client)
                hooks = await self._hooks(client, key, live[-1], live[-1].revision) if live else {}
                await run_hooks(found, "pre-uninstall", hooks, opts.timeout)
                pruned, kept = await prune(found, [], *live, delete_data=delete_data)
                await run_hooks(found, "post-uninstall", hooks, opts.timeout)
            latest = history[-1]
            if keep_history:
                done = await self.repo.set_status(
                    key,
                    latest.revision,
                    owner,
                    status="uninstalled",
                    at=now(),
                    description="uninstalled" + (" (data kept)" if kept else ""),
                )
                return Outcome(revision=done, pruned=pruned, kept=kept)
            await self.sealed.forget(await self.repo.delete(key, owner))
            return Outcome(
                revision=attrs.evolve(latest, status="uninstalled"), pruned=pruned, kept=kept
            )

    async def status(self, key: ReleaseKey) -> tuple[AppRevision, list[dict[str, Any]]]:
        """The newest revision and each of its objects with its readiness."""
        rev = await self.repo.get(key)
        objects: list[dict[str, Any]] = []
        try:
            async with KubeClient(await self.connection(key.cluster)) as client:
                found = Discovery(client)
                for ref in rev.inventory:
                    live = await fetch(found, ref)
                    ok, why = readiness(live) if live is not None else (False, "missing")
                    objects.append(
                        {"object": str(ref), "ready": ok, "detail": why, "data": ref.data}
                    )
        except Unavailable as exc:
            objects.append({"object": "", "ready": False, "detail": exc.message, "data": False})
        return rev, objects

    async def diff(
        self,
        key: ReleaseKey,
        module: Module | None,
        values: dict[str, Any],
        *,
        reuse_values: bool,
    ) -> tuple[str, str]:
        """(current manifest, new manifest) with Secret values redacted in both; without
        ``module``, the release's own module."""
        rev = await self.repo.get(key)
        if module is None:
            module = await archives.module_of(self.context, rev)
        if reuse_values:
            values = merge(await self.sealed.values_of(rev), values)
        values = await certificates.fill(self.context, module, values, key)
        checked = check_values(module.spec.parameters, values)
        async with KubeClient(await self.connection(key.cluster)) as client:
            version = str((await client.version()).get("gitVersion", ""))
        new = await render_off_loop(
            module,
            checked,
            release=Release(name=key.name, namespace=key.namespace, revision=rev.revision + 1),
            cluster=Cluster(name=key.cluster, version=version),
        )
        return redact_manifest(await self.sealed.manifest_of(rev)), redact_manifest(new.manifest)


def _message(exc: BaseException) -> str:
    """The first LabError's message in ``exc`` (an exception group too), else its type."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            return _message(inner)
    return exc.message if isinstance(exc, LabError) else type(exc).__name__


__all__ = ["AppEngine", "ApplyFailed", "Options", "Outcome"]
