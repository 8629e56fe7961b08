"""The module of every revision, kept so that a rollback, an uninstall or a diff can render it
again (its hooks, a new manifest) without the operator's copy.

A built-in is found again in this labd's wheel (by name, version and sha256). Any other module
is kept as an artifact (``ctx().artifacts``): name ``module-NAME``, version
``VERSION-SHA12`` (the archive's sha256 prefix, so two archives of one version never clash),
arch ``any``. Artifacts are content-addressed, so the same archive is stored once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from lab.errors import NotFound
from lab.model.apps import AppRevision
from lab.modules import Module, from_archive, load_builtin

if TYPE_CHECKING:
    from lab.labd.context import LabdContext

ARCH = "any"


def artifact_key(name: str, version: str, sha256: str) -> tuple[str, str, str]:
    return f"module-{name}", f"{version}-{sha256[:12]}", ARCH


async def keep(context: LabdContext, module: Module, *, who: str) -> None:
    """Store ``module``'s archive (a no-op for a built-in and for an archive already kept)."""
    if module.source == "builtin":
        return
    data = module.archive()

    async def one() -> AsyncIterator[bytes]:
        yield data

    name, version, arch = artifact_key(module.spec.name, module.spec.version, module.digest)
    await context.artifacts.add(
        name,
        version,
        arch,
        one(),
        created_by=who,
        filename=f"{module.spec.name}-{module.spec.version}.tar.gz",
        expected_sha256=module.digest,
    )


async def module_of(context: LabdContext, rev: AppRevision) -> Module:
    """The module ``rev`` was made from; NotFound when neither the wheel nor the artifacts
    have it any more."""
    try:
        builtin = load_builtin(rev.module, rev.version)
    except NotFound:
        builtin = None
    if builtin is not None and builtin.digest == rev.module_digest:
        return builtin
    name, version, arch = artifact_key(rev.module, rev.version, rev.module_digest)
    try:
        artifact = await context.artifacts.find(name, version, arch)
    except NotFound as exc:
        raise NotFound(
            f"the module of revision {rev.revision} ({rev.module}@{rev.version}) is no longer "
            f"kept (artifact {name} {version})",
            details={"fields": ["module"]},
        ) from exc
    data = b"".join([chunk async for chunk in context.artifacts.chunks(artifact)])
    return from_archive(data, rev.module_digest, source=f"artifact {name} {version}")
