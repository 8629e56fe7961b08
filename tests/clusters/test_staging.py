"""Artifacts staged on a node through a real lab-agent: a transfer cut by a killed agent is
resumed by `labctl clusters resume`, which sends only the bytes the node lacks (the audit
entries say from which offset and how many), and the installed k3s is byte-exact; a part that
is longer than the artifact or does not end up with its checksum is discarded and sent again
from zero, once; content that arrives corrupt from zero is never installed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.labd.clusterops.node import NodeShell, StepFailed
from lab.labd.clusterops.render import NodePaths
from lab.labd.clusterops.transfer import Sent, stage_artifact
from lab.model import Artifact
from tests.clusters.rig import V1, ClusterLab, cluster_lab, free_port, k3s_program


def padded_k3s(lab: ClusterLab, size: int) -> bytes:
    """The stand-in k3s, made ``size`` bytes long by a comment line of random hex."""
    program = k3s_program(V1, lab.record)
    filler = size - len(program) - 3
    return program + b"# " + os.urandom(filler // 2 + 1).hex().encode()[:filler] + b"\n"


async def transfers(lab: ClusterLab) -> list[dict[str, Any]]:
    """The details of every artifact transfer labd audited, oldest first."""
    assert lab.labd.context is not None
    entries = await lab.labd.context.store.audit.list(action="artifacts:read")
    return [{**e.details, "result": e.result} for e in entries if "sent" in e.details]


async def test_a_killed_agent_resumes_where_the_transfer_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(240):
        async with cluster_lab(tmp_path, ["s1"]) as lab:
            assert lab.labd.context is not None and lab.nursery is not None
            store = lab.labd.context.artifacts
            content = padded_k3s(lab, 3 * 1024 * 1024 + 4321)
            await lab.add_artifact("k3s", V1, "amd64", content)
            cut = 1024 * 1024 + 17  # not on a chunk boundary
            reached = trio.Event()
            original = store.chunks

            async def gated(
                artifact: Artifact, start: int = 0, end: int | None = None
            ) -> AsyncGenerator[bytes, None]:
                """The first transfer stops after ``cut`` bytes and hangs there."""
                async with aclosing(original(artifact, start, end)) as chunks:
                    if reached.is_set():
                        async for chunk in chunks:
                            yield chunk
                        return
                    left = cut
                    async for chunk in chunks:
                        yield chunk[:left]
                        left -= len(chunk[:left])
                        if not left:
                            break
                reached.set()
                await trio.sleep_forever()

            monkeypatch.setattr(store, "chunks", gated)
            part = lab.root("s1") / "usr/local/bin/k3s.staged.part"
            async with await lab.http() as client:
                body = {"servers": ["s1"], "api_address": "127.0.0.1", "api_port": free_port()}
                resp = await client.post("/api/clusters/c1/create", json=body)
                assert resp.status_code == 200, resp.text
                await reached.wait()
                while not part.exists() or part.stat().st_size < cut:  # the node wrote it all
                    await trio.sleep(0.05)
                await lab.kill_agent("s1")
                op = await lab.wait_op(client, "c1", resp.json()["id"])
            assert op["status"] == "failed", json.dumps(op, indent=1)
            failed = next(s for s in op["steps"] if s["status"] == "failed")
            assert (failed["name"], failed["node"]) == ("stage", "s1")
            assert part.read_bytes() == content[:cut]

            await lab.start_agent(lab.nursery, "s1")
            resumed = await lab.labctl("clusters", "resume", "c1")
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
            installed = lab.root("s1") / "usr/local/bin/k3s"
            assert installed.read_bytes() == content
            assert installed.stat().st_mode & 0o777 == 0o755
            assert not part.exists()
            sent = [(t["node"], t["start"], t["sent"], t["result"]) for t in await transfers(lab)]
            assert sent[0][:2] == ("s1", 0) and sent[0][2] >= cut and sent[0][3] == "error"
            assert sent[1:] == [("s1", cut, len(content) - cut, "success")]


async def test_a_bad_part_is_sent_again_from_zero_once(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with cluster_lab(tmp_path, ["s1"]) as lab:
            assert lab.labd.context is not None
            store = lab.labd.context.artifacts
            content = os.urandom(2 * 1024 * 1024 + 99)
            await lab.add_artifact("k3s", V1, "amd64", content)
            ref = await store.find("k3s", V1, "amd64")
            root = lab.root("s1")
            sh = NodeShell(
                lab.labd.context,
                "s1",
                exec_path=lab.labd.context.config.cluster_exec_path.replace("{node}", "s1"),
                paths=NodePaths(root=str(root)),
            )
            seen: list[tuple[int, int, bool]] = []

            async def report(sent: Sent) -> None:
                seen.append((sent.start, sent.sent, sent.ok))

            async def stage(dest: Path) -> None:
                await stage_artifact(sh, ref, store, str(dest), mode="0640", report=report)

            dest = root / "opt" / "k3s"
            part = root / "opt" / "k3s.part"
            size = len(content)

            # A part longer than the artifact: discarded, everything sent once.
            dest.parent.mkdir()
            part.write_bytes(content + b"more")
            await stage(dest)
            assert dest.read_bytes() == content and dest.stat().st_mode & 0o777 == 0o640
            assert seen == [(0, size, True)] and not part.exists()

            # Already in place: nothing is sent.
            seen.clear()
            await stage(dest)
            assert seen == []

            # A part that is not the artifact's beginning: the rest is sent, the checksum
            # fails on the node, the part goes and the whole is sent again, once.
            dest.unlink()
            part.write_bytes(b"rotten" + content[6:1000])
            await stage(dest)
            assert dest.read_bytes() == content and not part.exists()
            assert seen == [(1000, size - 1000, True), (0, size, True)]

            # A complete part is only verified, and installed.
            seen.clear()
            dest.unlink()
            part.write_bytes(content)
            await stage(dest)
            assert dest.read_bytes() == content and seen == []

            # labd's own file rotted (same size): what arrives is wrong from zero; after one
            # restart from zero nothing is installed and no part is left.
            seen.clear()
            dest.unlink()
            part.write_bytes(content[:5000])
            blob = store.path_of(ref.sha256)
            rotten = bytearray(content)
            rotten[size // 2] ^= 0xFF
            blob.write_bytes(bytes(rotten))
            with pytest.raises(StepFailed, match="arrived corrupt on server/s1"):
                await stage(dest)
            assert seen == [(5000, size - 5000, True), (0, size, True)]
            assert not dest.exists() and not part.exists()
            assert hashlib.sha256(rotten).hexdigest() != ref.sha256
