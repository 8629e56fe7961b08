"""Rendering a module in labd (off the event loop, under a deadline) and the checks before it:
labd's version and the module's dependencies."""

from __future__ import annotations

import functools
from typing import Any

import trio

from lab import __version__
from lab.errors import Invalid
from lab.model.apps import ReleaseKey
from lab.modules import Cluster, Module, Release, Rendered, render, satisfies
from lab.store import AppReleaseRepository

RENDER_TIMEOUT = 20.0
"""Seconds a module's templates may take to render."""


async def render_off_loop(
    module: Module, values: dict[str, Any], *, release: Release, cluster: Cluster
) -> Rendered:
    """:func:`lab.modules.render` in a worker thread, so that templates that loop for long do
    not stall labd's event loop; Invalid after :data:`RENDER_TIMEOUT` (the thread is then
    abandoned: Python cannot stop it, it ends with the loop)."""
    job = functools.partial(render, module, values, release=release, cluster=cluster)
    try:
        with trio.fail_after(RENDER_TIMEOUT):
            return await trio.to_thread.run_sync(job, abandon_on_cancel=True)
    except trio.TooSlowError:
        raise Invalid(
            f"{module.spec.ref}: rendering took more than {RENDER_TIMEOUT:g}s",
            details={"fields": ["module"]},
        ) from None


async def check_requirements(repo: AppReleaseRepository, key: ReleaseKey, module: Module) -> None:
    """Invalid unless this labd's version meets ``requires.labd`` (an untagged build,
    0.0.x, always does) and every non-optional dependency has a deployed release of a
    matching version on the cluster. ``requires.kubernetes`` is checked at render."""
    spec = module.spec
    wanted = spec.requires.get("labd")
    if wanted and not __version__.startswith("0.0.") and not satisfies(__version__, wanted):
        raise Invalid(
            f"{spec.ref} requires labd {wanted}; this labd is {__version__}",
            details={"fields": ["module"]},
        )
    needed = [d for d in spec.dependencies if not d.optional]
    if not needed:
        return
    releases = await repo.releases(cluster=key.cluster)
    for dep in needed:
        if not any(
            r.module == dep.module
            and r.status == "deployed"
            and (not dep.version or satisfies(r.version, dep.version))
            for r in releases
        ):
            raise Invalid(
                f"{spec.ref} needs module {dep.module} {dep.version or ''}".rstrip()
                + f" deployed on cluster {key.cluster}: install it first",
                details={
                    "fields": ["module"],
                    "hint": f"labctl apps install NAME "
                    f"--module {dep.module} --cluster {key.cluster}",
                },
            )
