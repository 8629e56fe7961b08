"""Fetching an artifact from labd on a node: over the agent's mTLS identity, resumable, and
verified against the sha256 the caller expects before it is put in place.

The download goes to ``DEST.part``; a later call continues it with ``Range: bytes=N-`` (a
part that is already complete is only verified). Only content whose sha256 is the expected
one is renamed to ``DEST``; anything else is deleted and reported.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import quote

import trio

from lab.client.api import LabClient
from lab.errors import Conflict

CHUNK = 256 * 1024


class ChecksumMismatch(Conflict):
    """The downloaded content does not hash to the expected sha256 (nothing was installed)."""

    code = "checksum_mismatch"


def content_path(name: str, version: str, arch: str) -> str:
    parts = (quote(p, safe="") for p in (name, version, arch))
    return "/api/artifacts/{}/{}/{}/content".format(*parts)


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


async def fetch_artifact(
    client: LabClient,
    *,
    name: str,
    version: str,
    arch: str,
    sha256: str,
    dest: Path,
    size: int | None = None,
    mode: int = 0o755,
) -> Path:
    """Download the artifact to ``dest`` (mode ``mode``) unless it is there already.

    ``client`` speaks to labd with the agent's certificate. ``size`` (when known) spares a
    request for a part that is already complete. Raises :class:`ChecksumMismatch` when the
    content is not ``sha256`` (the part is deleted, ``dest`` untouched),
    :class:`lab.errors.Unavailable` when labd is unreachable or the transfer breaks (the
    part stays for the next call), :class:`lab.errors.NotFound` for an unknown artifact.
    Cancellation leaves the part for the next call.
    """
    if await trio.Path(dest).exists():
        digest, _ = await trio.to_thread.run_sync(_hash_file, dest)
        if digest.hexdigest() == sha256:
            return dest
    part = dest.with_name(dest.name + ".part")
    have = 0
    digest = hashlib.sha256()
    if await trio.Path(part).exists():
        digest, have = await trio.to_thread.run_sync(_hash_file, part)
    if size is None or have < size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        async with client.stream(
            "GET", content_path(name, version, arch), headers=headers
        ) as response:
            announced = response.headers.get("X-Content-SHA256")
            if announced and announced != sha256:
                await trio.Path(part).unlink(missing_ok=True)
                raise ChecksumMismatch(
                    f"labd's artifact {name} {version} {arch} is {announced}, not {sha256}",
                    details={"expected": sha256, "announced": announced},
                )
            if response.status_code != 206:  # the whole content: start again
                have, digest = 0, hashlib.sha256()
            async with await trio.open_file(part, "ab" if have else "wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    digest.update(chunk)
                    await out.write(chunk)
                await out.flush()
                await trio.to_thread.run_sync(os.fsync, out.fileno())
    if digest.hexdigest() != sha256:
        await trio.Path(part).unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"artifact {name} {version} {arch} downloaded as {digest.hexdigest()}, expected "
            f"{sha256}: not installed",
            details={"expected": sha256, "got": digest.hexdigest()},
        )
    await trio.Path(part).chmod(mode)
    await trio.to_thread.run_sync(os.replace, part, dest)
    return dest
