"""labd's artifacts (``ctx().artifacts``): content-addressed files and their metadata rows.

The content of an artifact is a file ``<artifacts_dir>/sha256/<hex>`` written once (temp file,
fsync, rename), so two names with the same bytes share it; the rows (name, version, arch,
sha256, size) are in the database. The files are not replicated: in cluster mode every
replica must see the same ``artifacts_dir`` (a shared volume), see docs/clusters.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import trio

from lab.errors import Invalid, TooLarge, Unavailable
from lab.model import Artifact
from lab.store import ArtifactRepository

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}")
ARCH = re.compile(r"[a-z0-9_]{1,16}")
SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 256 * 1024
STALE_UPLOAD = 86400.0
"""Seconds after its last write a temporary upload file counts as abandoned (its labd died)."""


def check_key(name: str, version: str, arch: str) -> None:
    """Invalid naming the part of (name, version, arch) that is not acceptable."""
    for field, value, pattern in (
        ("name", name, NAME),
        ("version", version, VERSION),
        ("arch", arch, ARCH),
    ):
        if not pattern.fullmatch(value):
            raise Invalid(
                f"artifact {field} {value[:80]!r} is not valid", details={"fields": [field]}
            )


class ArtifactStore:
    """Add, find, read and delete artifacts. Every method raises :class:`NotFound` for an
    unknown artifact and :class:`Unavailable` when the database cannot be reached."""

    def __init__(self, repo: ArtifactRepository, root: Path, *, max_size: int) -> None:
        self._repo = repo
        self.root = root
        self.max_size = max_size

    def path_of(self, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256):
            raise Invalid("not a sha256", details={"fields": ["sha256"]})
        return self.root / "sha256" / sha256

    async def add(
        self,
        name: str,
        version: str,
        arch: str,
        chunks: AsyncIterator[bytes],
        *,
        created_by: str,
        filename: str = "",
        expected_sha256: str | None = None,
    ) -> tuple[Artifact, bool]:
        """Store the content ``chunks`` yields; (the artifact, whether it is new).

        Raises :class:`TooLarge` beyond ``max_size``, :class:`Invalid` when the content does
        not hash to ``expected_sha256``, :class:`lab.errors.Conflict` when the key exists with
        other content. A cancelled or failed upload leaves no file behind.
        """
        check_key(name, version, arch)
        if expected_sha256 is not None and not SHA256.fullmatch(expected_sha256):
            raise Invalid(
                "the expected sha256 is not 64 hex digits", details={"fields": ["sha256"]}
            )
        tmp_dir = self.root / "tmp"
        await trio.to_thread.run_sync(_make_dirs, tmp_dir, self.root / "sha256")
        await trio.to_thread.run_sync(_sweep_stale, tmp_dir)
        tmp = tmp_dir / f"upload-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            async with await trio.open_file(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_size:
                        raise TooLarge(
                            f"artifact is larger than artifacts_max_size ({self.max_size} bytes)"
                        )
                    digest.update(chunk)
                    await out.write(chunk)
                await out.flush()
                await trio.to_thread.run_sync(os.fsync, out.fileno())
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise Invalid(
                    f"the content's sha256 is {sha256}, not the {expected_sha256} announced "
                    "(changed or cut in transit)",
                    details={"fields": ["sha256"], "sha256": sha256},
                )
            target = self.path_of(sha256)
            await trio.to_thread.run_sync(os.replace, tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        row = Artifact(
            name=name,
            version=version,
            arch=arch,
            sha256=sha256,
            size=size,
            filename=filename,
            created_by=created_by,
        )
        try:
            return await self._repo.add(row)
        except BaseException:
            with trio.CancelScope(shield=True):
                if await self._repo.references(sha256) == 0:
                    target.unlink(missing_ok=True)
            raise

    async def find(self, name: str, version: str, arch: str) -> Artifact:
        return await self._repo.get(name, version, arch)

    async def list(self, name: str | None = None) -> list[Artifact]:
        return await self._repo.list(name)

    def size_on_disk(self, artifact: Artifact) -> int:
        """The content's size; :class:`Unavailable` when this replica does not have it."""
        path = self.path_of(artifact.sha256)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise Unavailable(
                f"the content of artifact {artifact.name} {artifact.version} {artifact.arch} "
                f"is not in {self.root} on this labd (in cluster mode artifacts_dir must be "
                "shared by every replica)",
                details={"sha256": artifact.sha256},
            ) from None
        if size != artifact.size:
            raise Unavailable(
                f"the content file of {artifact.sha256} has {size} bytes, not {artifact.size}",
                details={"sha256": artifact.sha256},
            )
        return size

    async def chunks(
        self, artifact: Artifact, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The content from ``start`` to ``end`` (exclusive; default: the end)."""
        stop = self.size_on_disk(artifact) if end is None else end
        async with await trio.open_file(self.path_of(artifact.sha256), "rb") as src:
            await src.seek(start)
            left = stop - start
            while left > 0:
                chunk = await src.read(min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk

    async def delete(self, name: str, version: str, arch: str) -> Artifact:
        """Drop the artifact; its content file too when no other artifact names it."""
        check_key(name, version, arch)
        gone, left = await self._repo.delete(name, version, arch)
        if left == 0:
            self.path_of(gone.sha256).unlink(missing_ok=True)
        return gone


def _sweep_stale(tmp_dir: Path) -> None:
    """Remove ``upload-*`` files not written to for :data:`STALE_UPLOAD` seconds: left by a
    labd that died mid-upload (a live upload, on any replica, writes far more often)."""
    cutoff = time.time() - STALE_UPLOAD
    for entry in tmp_dir.glob("upload-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink(missing_ok=True)
        except OSError:
            continue  # gone meanwhile, or not ours to remove: the next upload tries again


def _make_dirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
