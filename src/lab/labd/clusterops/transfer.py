"""An artifact staged on a node through its agent's exec path: resumable and verified there.

labd streams the content on the stdin of an appending ``dd`` into ``DEST.part``. Before
sending, it asks the node how many bytes the part already holds (``stat``) and sends only the
rest, read from that offset of the artifact's file. The node then hashes the whole part; only
content whose sha256 is the artifact's is renamed to ``DEST`` (with its mode). A part longer
than the artifact, or one whose final checksum is wrong, is deleted and the transfer starts
again from zero, once; content that arrives wrong from zero fails the step and leaves
nothing behind.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

from attrs import frozen

from lab.labd.clusterops.node import NodeShell, StepFailed
from lab.model import Artifact

if TYPE_CHECKING:
    from lab.labd.artifacts import ArtifactStore

TRANSFER_LIMIT = 3600.0  # seconds one transfer may take


@frozen(kw_only=True)
class Sent:
    """One transfer to a node: from which offset of the artifact, how many bytes labd handed
    to the agent's session, and whether the node took them all (``ok``)."""

    node: str
    artifact: Artifact
    path: str
    start: int
    sent: int
    ok: bool


Report = Callable[[Sent], Awaitable[None]]


async def file_sha256(sh: NodeShell, path: str) -> str:
    """The sha256 of ``path`` on the node; "" when it cannot be read (missing)."""
    ran = await sh.run(["sha256sum", "--", path])
    return ran.text.split()[0] if ran.code == 0 and ran.text.strip() else ""


async def part_size(sh: NodeShell, path: str) -> int:
    """How many bytes ``path`` holds on the node; 0 when it is missing."""
    ran = await sh.run(["stat", "-c", "%s", "--", path])
    text = ran.text.strip()
    return int(text) if ran.code == 0 and text.isdigit() else 0


async def _append(
    sh: NodeShell, ref: Artifact, source: ArtifactStore, part: str, start: int, report: Report
) -> None:
    """Send the artifact from ``start`` on; appended to ``part`` (created afresh at 0)."""
    sent = 0

    async def counted() -> AsyncGenerator[bytes, None]:
        nonlocal sent
        async with aclosing(source.chunks(ref, start)) as chunks:
            async for chunk in chunks:
                sent += len(chunk)
                yield chunk

    await sh.check(["mkdir", "-p", "--", posixpath.dirname(part)])
    sink = ["dd", f"of={part}", "bs=65536", "status=none"]
    if start:
        sink += ["oflag=append", "conv=notrunc"]
    try:
        async with aclosing(counted()) as data:  # a cut transfer closes the file at once
            await sh.check(sink, stdin=data, limit=TRANSFER_LIMIT)
    except Exception:
        await report(Sent(node=sh.node, artifact=ref, path=part, start=start, sent=sent, ok=False))
        raise
    await report(Sent(node=sh.node, artifact=ref, path=part, start=start, sent=sent, ok=True))


async def stage_artifact(
    sh: NodeShell, ref: Artifact, source: ArtifactStore, dest: str, *, mode: str, report: Report
) -> None:
    """``dest`` holds the artifact (mode ``mode``), checksum verified on the node; nothing is
    sent when it does already. ``report`` hears of every transfer, also a cut one.

    Raises :class:`StepFailed` when the content arrives corrupt from zero (nothing installed,
    no part left) and :class:`lab.errors.Unavailable` when the agent drops (the part stays,
    and the next call sends only what it lacks).
    """
    if await file_sha256(sh, dest) == ref.sha256:
        return
    part = dest + ".part"
    while True:
        start = await part_size(sh, part)
        if start > ref.size:  # not a prefix of this artifact
            await sh.check(["rm", "-f", "--", part])
            start = 0
        if start < ref.size or start == 0:
            await _append(sh, ref, source, part, start, report)
        got = await file_sha256(sh, part)
        if got == ref.sha256:
            await sh.check(["chmod", mode, "--", part])
            await sh.check(["mv", "-f", "--", part, dest])
            return
        await sh.check(["rm", "-f", "--", part])
        if start == 0:
            raise StepFailed(
                f"{ref.name} {ref.version} arrived corrupt on server/{sh.node}"
                f" (sha256 {got[:12] or 'none'}, expected {ref.sha256[:12]})"
            )
        # what was there before this transfer was not the artifact's beginning: once more
        # from zero (the loop ends: the part is gone, so the next start is 0)
