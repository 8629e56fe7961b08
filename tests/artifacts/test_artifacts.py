"""Artifacts end to end: labctl artifacts add (bigger than labd's usual body limit), one file
per content, get artifacts, conflicts and deletes; the content read whole or from an offset
(Range) with an agent's certificate. How staging on a node resumes and verifies is
tests/clusters/test_staging.py."""

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

from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
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


async def added(labd: RunningLabd, admin: Credentials, content: bytes = CONTENT) -> None:
    async with labd.client(admin) as http:
        resp = await http.put(f"/api/artifacts/k3s/{VERSION}/amd64", content=content)
        assert resp.status_code == 201, resp.text


async def content_reads(labd: RunningLabd) -> list[dict[str, Any]]:
    assert labd.context is not None
    entries = await labd.context.store.audit.list(action="artifacts:read")
    return [e.details for e in entries if str(e.details.get("path", "")).endswith("/content")]


async def test_content_is_read_whole_or_from_an_offset(tmp_path: Path) -> None:
    cut = 1024 * 1024 + 17
    content = f"/api/artifacts/k3s/{VERSION}/amd64/content"
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await added(labd, admin)
            agent = await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
            async with labd.client(agent) as http:
                whole = await http.get(content)
                assert whole.status_code == 200 and whole.content == CONTENT
                assert whole.headers["X-Content-SHA256"] == SHA
                rest = await http.get(content, headers={"Range": f"bytes={cut}-"})
                assert rest.status_code == 206 and rest.content == CONTENT[cut:]
                size = len(CONTENT)
                assert rest.headers["Content-Range"] == f"bytes {cut}-{size - 1}/{size}"
                # The answer to a suffix Range is the tail, with its Content-Range.
                tail = await http.get(content, headers={"Range": "bytes=-10"})
                assert tail.status_code == 206
                assert tail.content == CONTENT[-10:]
                assert tail.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
                past = await http.get(content, headers={"Range": f"bytes={size}-"})
                assert past.status_code == 416
            reads = await content_reads(labd)
            assert [(r["status"], r.get("start"), r.get("end")) for r in reads] == [
                (200, 0, size),
                (206, cut, size),
                (206, size - 10, size),
                (416, None, None),
            ]
