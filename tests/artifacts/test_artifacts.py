"""Artifacts end to end: labctl artifacts add (bigger than labd's usual body limit), one file
per content, get artifacts, conflicts and deletes; the agent-side fetch over the agent's mTLS
certificate resumes a cut download with Range and refuses corrupted content."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from lab import pki
from lab.agent.artifacts import ChecksumMismatch, fetch_artifact
from lab.client.api import LabClient
from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from lab.errors import Unavailable
from tests.labd.harness import Credentials, RunningLabd, running_labd

VERSION = "v1.31.4+k3s1"
CONTENT = os.urandom(3 * 1024 * 1024 + 123)  # above the 1 MiB body limit of other routes
SHA = hashlib.sha256(CONTENT).hexdigest()


async def labctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def env_for(labd: RunningLabd, who: Credentials, home: Path) -> dict[str, str]:
    save_credentials(
        home, CliCredentials(ca_pem=labd.ca_pem(), cert_pem=who.cert_pem, key_pem=who.key_pem)
    )
    return {
        **os.environ,
        "LABCTL_HOME": str(home),
        "LABCTL_CONFIG": str(home / "config.yaml"),
        "LABCTL_SERVER": labd.url,
    }


def blobs(labd: RunningLabd) -> list[str]:
    folder = labd.data_dir / "artifacts" / "sha256"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_add_list_share_content_and_delete(tmp_path: Path) -> None:
    source = tmp_path / "k3s"
    source.write_bytes(CONTENT)
    other = tmp_path / "k3s-other"
    other.write_bytes(CONTENT[:-1] + b"!")
    with trio.fail_after(180):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            env = env_for(labd, admin, tmp_path / "home")
            add = ["artifacts", "add", str(source), "--name", "k3s", "--version", VERSION]
            done = await labctl(env, *add, "--arch", "amd64")
            assert done.returncode == 0, done.stderr
            assert f"artifact k3s {VERSION} amd64: sha256:{SHA} (3.0 MiB)" in done.stdout
            assert blobs(labd) == [SHA]
            assert (labd.data_dir / "artifacts" / "sha256" / SHA).read_bytes() == CONTENT
            again = await labctl(env, *add, "--arch", "amd64", "-o", "json")
            assert again.returncode == 0, again.stderr
            assert json.loads(again.stdout)["sha256"] == SHA
            arm = await labctl(env, *add, "--arch", "arm64")
            assert arm.returncode == 0, arm.stderr
            assert blobs(labd) == [SHA]  # one file for one content

            clash = await labctl(env, "artifacts", "add", str(other), "--name", "k3s",
                                 "--version", VERSION, "--arch", "amd64")  # fmt: skip
            assert clash.returncode != 0
            assert "exists with other content" in clash.stderr

            table = await labctl(env, "get", "artifacts")
            lines = [line.split() for line in table.stdout.splitlines()]
            assert lines[0] == ["NAME", "VERSION", "ARCH", "SIZE", "SHA256"]
            assert lines[1] == ["k3s", VERSION, "amd64", "3.0", "MiB", SHA[:12]]
            assert lines[2][:3] == ["k3s", VERSION, "arm64"]
            listed = json.loads((await labctl(env, "get", "artifacts", "k3s", "-o", "json")).stdout)
            assert [(a["arch"], a["sha256"], a["size"]) for a in listed] == [
                ("amd64", SHA, len(CONTENT)),
                ("arm64", SHA, len(CONTENT)),
            ]

            gone = await labctl(env, "artifacts", "delete", "k3s", "--version", VERSION,
                                "--arch", "amd64")  # fmt: skip
            assert gone.returncode == 0, gone.stderr
            assert blobs(labd) == [SHA]  # arm64 still names it
            await labctl(env, "artifacts", "delete", "k3s", "--version", VERSION, "--arch", "arm64")
            assert blobs(labd) == []
            assert list((labd.data_dir / "artifacts" / "tmp").iterdir()) == []


# httpx leaves its request-body generator unclosed when labd closes the connection early.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_uploads_that_do_not_match_or_are_too_big_leave_nothing(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path, artifacts_max_size=2 * 1024 * 1024) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            async with labd.client(admin) as http:
                wrong = await http.put(
                    f"/api/artifacts/k3s/{VERSION}/amd64",
                    content=CONTENT[: 1024 * 1024],
                    headers={"X-Content-SHA256": SHA},
                )
                assert wrong.status_code == 400, wrong.text
                assert wrong.json()["error"]["details"]["fields"] == ["sha256"]
                # labd answers 413 before reading the rest and closes the connection, so the
                # client may see the answer or only the closed connection: the audit says.
                try:
                    big = await http.put(f"/api/artifacts/k3s/{VERSION}/amd64", content=CONTENT)
                    assert big.status_code == 413, big.text
                except httpx.TransportError:
                    pass
                bad = await http.put("/api/artifacts/K3S/v1/amd64", content=b"x")
                assert bad.status_code == 400
                assert bad.json()["error"]["details"]["fields"] == ["name"]
            assert await labd.context.artifacts.list() == []
            entries = await labd.context.store.audit.list(action="artifacts:create")
            assert [e.details["status"] for e in entries] == [400, 413, 400]
            assert blobs(labd) == []
            tmp = labd.data_dir / "artifacts" / "tmp"
            assert not tmp.exists() or list(tmp.iterdir()) == []


def agent_client(labd: RunningLabd, agent: Credentials) -> LabClient:
    ctx = pki.client_ssl_context(labd.ca_pem(), cert_pem=agent.cert_pem, key_pem=agent.key_pem)
    return LabClient(labd.url, ssl_context=ctx, timeout=30)


async def added(labd: RunningLabd, admin: Credentials, content: bytes = CONTENT) -> None:
    async with labd.client(admin) as http:
        resp = await http.put(f"/api/artifacts/k3s/{VERSION}/amd64", content=content)
        assert resp.status_code == 201, resp.text


async def content_reads(labd: RunningLabd) -> list[dict[str, Any]]:
    assert labd.context is not None
    entries = await labd.context.store.audit.list(action="artifacts:read")
    return [e.details for e in entries if str(e.details.get("path", "")).endswith("/content")]


async def test_an_agent_resumes_a_cut_download(tmp_path: Path) -> None:
    dest = tmp_path / "node" / "k3s"
    dest.parent.mkdir()
    cut = 1024 * 1024 + 17
    # What a download cut after `cut` bytes leaves behind.
    (dest.parent / "k3s.part").write_bytes(CONTENT[:cut])
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await added(labd, admin)
            agent = await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
            async with agent_client(labd, agent) as client:
                got = await fetch_artifact(
                    client, name="k3s", version=VERSION, arch="amd64", sha256=SHA, dest=dest
                )
                assert got == dest and dest.read_bytes() == CONTENT
                assert dest.stat().st_mode & 0o777 == 0o755
                assert not (dest.parent / "k3s.part").exists()
                # Installed already: nothing is fetched again.
                await fetch_artifact(
                    client, name="k3s", version=VERSION, arch="amd64", sha256=SHA, dest=dest
                )
            reads = await content_reads(labd)
            assert [(r["status"], r["start"], r["end"]) for r in reads] == [
                (206, cut, len(CONTENT))
            ]
            # The answer to a Range request is the tail, with its Content-Range.
            async with labd.client(agent) as http:
                tail = await http.get(
                    f"/api/artifacts/k3s/{VERSION}/amd64/content", headers={"Range": "bytes=-10"}
                )
                assert tail.status_code == 206
                assert tail.content == CONTENT[-10:]
                size = len(CONTENT)
                assert tail.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
                past = await http.get(
                    f"/api/artifacts/k3s/{VERSION}/amd64/content",
                    headers={"Range": f"bytes={size}-"},
                )
                assert past.status_code == 416


async def test_corrupted_content_is_never_installed(tmp_path: Path) -> None:
    dest = tmp_path / "node" / "k3s"
    dest.parent.mkdir()
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await added(labd, admin)
            agent = await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
            # The file on labd's disk rots (same size, one byte changed).
            blob = labd.data_dir / "artifacts" / "sha256" / SHA
            rotten = bytearray(CONTENT)
            rotten[12345] ^= 0xFF
            blob.write_bytes(bytes(rotten))
            async with agent_client(labd, agent) as client:
                with pytest.raises(ChecksumMismatch, match="not installed"):
                    await fetch_artifact(
                        client, name="k3s", version=VERSION, arch="amd64", sha256=SHA, dest=dest
                    )
                assert not dest.exists() and not (dest.parent / "k3s.part").exists()
                # A part that was corrupted on the node is refused the same way.
                blob.write_bytes(CONTENT)
                (dest.parent / "k3s.part").write_bytes(b"garbage" + CONTENT[7:1000])
                with pytest.raises(ChecksumMismatch):
                    await fetch_artifact(
                        client, name="k3s", version=VERSION, arch="amd64", sha256=SHA, dest=dest
                    )
                assert not dest.exists()
                # The caller expects other content than labd has: refused before downloading.
                with pytest.raises(ChecksumMismatch, match="is " + SHA):
                    await fetch_artifact(
                        client, name="k3s", version=VERSION, arch="amd64", sha256="0" * 64,
                        dest=dest,
                    )  # fmt: skip
                # And the next call with a clean slate installs it.
                await fetch_artifact(
                    client, name="k3s", version=VERSION, arch="amd64", sha256=SHA, dest=dest
                )
                assert dest.read_bytes() == CONTENT


async def cutting_proxy(
    target_port: int,
    cut_after: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A TCP proxy to labd that drops each connection once ``cut_after`` bytes went back to
    the client: a download cut in the middle, TLS and all."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream("127.0.0.1", target_port) as upstream,
            trio.open_nursery() as pipes,
        ):

            async def up() -> None:
                async for data in client:
                    await upstream.send_all(data)
                pipes.cancel_scope.cancel()

            async def down() -> None:
                sent = 0
                async for data in upstream:
                    keep = data[: max(0, cut_after - sent)]
                    if keep:
                        await client.send_all(keep)
                    sent += len(keep)
                    if sent >= cut_after:
                        break
                pipes.cancel_scope.cancel()

            pipes.start_soon(up)
            pipes.start_soon(down)

    await trio.serve_listeners(handle, listeners)


# httpx leaves its response generators unclosed when the connection is cut under them.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_download_cut_in_transit_resumes(tmp_path: Path) -> None:
    dest = tmp_path / "node" / "k3s"
    dest.parent.mkdir()
    part = dest.parent / "k3s.part"
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.admin()
            await added(labd, admin)
            agent = await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
            proxy = await nursery.start(cutting_proxy, labd.port, 1024 * 1024)
            ctx = pki.client_ssl_context(
                labd.ca_pem(), cert_pem=agent.cert_pem, key_pem=agent.key_pem
            )
            async with LabClient(f"https://127.0.0.1:{proxy}", ssl_context=ctx) as cut:
                with pytest.raises(Unavailable):
                    await fetch_artifact(
                        cut, name="k3s", version=VERSION, arch="amd64", sha256=SHA, dest=dest
                    )
            have = part.read_bytes()
            assert 0 < len(have) < len(CONTENT) and have == CONTENT[: len(have)]
            assert not dest.exists()
            async with agent_client(labd, agent) as client:
                await fetch_artifact(
                    client, name="k3s", version=VERSION, arch="amd64", sha256=SHA, dest=dest
                )
            assert dest.read_bytes() == CONTENT and not part.exists()
            reads = await content_reads(labd)
            assert reads[-1]["status"] == 206 and reads[-1]["start"] == len(have)
            nursery.cancel_scope.cancel()
