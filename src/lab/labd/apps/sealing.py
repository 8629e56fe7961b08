"""What of a release goes to labd's secrets store, and back.

Secret values (fields marked ``secret: true``) are sealed under
``app/CLUSTER/NAMESPACE/NAME/REVISION/values``; the manifest too (``.../manifest``) when the
module has secret fields or renders a Secret, and the database then keeps only its sha256.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import yaml

from lab.errors import NotFound
from lab.model.apps import AppRevision, ReleaseKey
from lab.modules import Module
from lab.modules.values import REDACTED, join_secrets, secret_paths, split_secrets


class SecretStore(Protocol):
    async def put(self, name: str, value: bytes) -> None: ...
    async def get(self, name: str) -> bytes: ...
    async def delete(self, name: str) -> object: ...


def secret_prefix(key: ReleaseKey, revision: int) -> str:
    return f"app/{key.cluster}/{key.namespace}/{key.name}/{revision}"


def redact_manifest(text: str) -> str:
    """``text`` with every Secret's ``data``/``stringData`` values replaced (for diffs)."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc.get("kind") == "Secret":
            for field in ("data", "stringData"):
                if isinstance(doc.get(field), dict):
                    doc[field] = dict.fromkeys(doc[field], REDACTED)
    return yaml.safe_dump_all(docs, sort_keys=True)


class ReleaseSecrets:
    """Seals and unseals the secret parts of revisions. Raises what the store raises."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    async def seal(
        self,
        key: ReleaseKey,
        revision: int,
        module: Module,
        values: Mapping[str, Any],
        manifest: str,
        objects: Iterable[Mapping[str, Any]],
    ) -> tuple[dict[str, Any], str, str]:
        """(public values, secret_ref, manifest column) once the secrets are sealed."""
        public, secret = split_secrets(module.spec.parameters, values)
        prefix = secret_prefix(key, revision)
        has_secret = any(o.get("kind") == "Secret" for o in objects)
        sealed_manifest = bool(secret_paths(module.spec.parameters)) or has_secret
        if secret:
            await self.store.put(f"{prefix}/values", json.dumps(secret).encode())
        if sealed_manifest:
            await self.store.put(f"{prefix}/manifest", manifest.encode())
        ref = prefix if (secret or sealed_manifest) else ""
        return public, ref, "" if sealed_manifest else manifest

    async def values_of(self, rev: AppRevision) -> dict[str, Any]:
        """The revision's values with its secrets unsealed (labd-internal use only)."""
        if not rev.secret_ref:
            return dict(rev.values)
        try:
            raw = await self.store.get(f"{rev.secret_ref}/values")
        except NotFound:
            return dict(rev.values)
        return join_secrets(rev.values, json.loads(raw))

    async def manifest_of(self, rev: AppRevision) -> str:
        if rev.manifest or not rev.secret_ref:
            return rev.manifest
        return (await self.store.get(f"{rev.secret_ref}/manifest")).decode()

    async def copy(self, source: AppRevision, key: ReleaseKey, revision: int) -> str:
        """Seal ``source``'s secrets again under ``revision``; its secret_ref ("" if none)."""
        if not source.secret_ref:
            return ""
        prefix = secret_prefix(key, revision)
        for what in ("values", "manifest"):
            try:
                value = await self.store.get(f"{source.secret_ref}/{what}")
            except NotFound:
                continue
            await self.store.put(f"{prefix}/{what}", value)
        return prefix

    async def forget(self, revisions: Iterable[AppRevision]) -> None:
        for rev in revisions:
            if rev.secret_ref:
                for what in ("values", "manifest"):
                    with contextlib.suppress(NotFound):
                        await self.store.delete(f"{rev.secret_ref}/{what}")
