"""contrib/release/publish.sh against a stand-in for Gitea's package and release API on
loopback: every artifact reaches its registry, the release carries the notes and the files."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.procs import clean_env

ROOT = Path(__file__).resolve().parents[2]
VERSION = "1.2.3"
AUTH = "Basic " + base64.b64encode(b"releaser:s3cret-token").decode()

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
    pytest.mark.skipif(
        importlib.util.find_spec("twine") is None, reason="twine is not installed (.[test])"
    ),
]


@dataclass
class Seen:
    method: str
    path: str
    auth: str | None
    body: bytes


@dataclass
class FakeGitea:
    url: str
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
def gitea() -> Iterator[FakeGitea]:
    fake = FakeGitea(url="")

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def record(self) -> Seen:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command, self.path, self.headers.get("Authorization"), self.rfile.read(length)
            )
            fake.seen.append(seen)
            return seen

        def do_PUT(self) -> None:
            seen = self.record()
            # curl sends credentials only after a 401 challenge, like a real Gitea asks.
            if seen.auth is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.answer(201, {})

        def do_POST(self) -> None:
            seen = self.record()
            if seen.auth is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if seen.path == "/api/v1/repos/owner/labctl/releases":
                self.answer(201, {"id": 42})
            else:
                self.answer(201, {})

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def make_checkout(tmp_path: Path) -> Path:
    """The script in a checkout whose dist/ holds small but well-formed artifacts."""
    repo = tmp_path / "repo"
    (repo / "contrib" / "release").mkdir(parents=True)
    shutil.copy2(ROOT / "contrib/release/publish.sh", repo / "contrib/release/publish.sh")
    dist = repo / "dist"
    dist.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: labctl\nVersion: {VERSION}\nSummary: test\n"
    with zipfile.ZipFile(dist / f"labctl-{VERSION}-py3-none-any.whl", "w") as zf:
        info = f"labctl-{VERSION}.dist-info"
        zf.writestr(f"{info}/METADATA", metadata)
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
        zf.writestr("lab/__init__.py", "")
    with tarfile.open(dist / f"labctl-{VERSION}.tar.gz", "w:gz") as tf:
        for name, text in (("PKG-INFO", metadata), ("pyproject.toml", "[project]\n")):
            member = tarfile.TarInfo(f"labctl-{VERSION}/{name}")
            member.size = len(text.encode())
            tf.addfile(member, io.BytesIO(text.encode()))
    (dist / f"labctl_{VERSION}_amd64.deb").write_bytes(b"!<arch>\ndeb")
    (dist / f"labctl-{VERSION}-1.x86_64.rpm").write_bytes(b"\xed\xab\xee\xdbrpm")
    (dist / "labctl.pyz").write_bytes(b"#!/usr/bin/env python3\nPK")
    (dist / "release-notes.md").write_text("- labd: one thing\n")
    sums = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted(dist.iterdir())
        if p.name != "release-notes.md"
    ]
    (dist / "SHA256SUMS").write_text("".join(sums))
    return repo


def publish(
    repo: Path, gitea: FakeGitea, tag: str = f"v{VERSION}"
) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        GITHUB_SERVER_URL=gitea.url,
        GITHUB_REPOSITORY="owner/labctl",
        GITHUB_REF_NAME=tag,
        RELEASE_USER="releaser",
        RELEASE_TOKEN="s3cret-token",
        HOME=str(repo.parent),
        # This interpreter (with twine) first; pip may not reach any index from here.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PIP_NO_INDEX="1",
    )
    for name in [n for n in env if n.startswith("TWINE_")]:
        del env[name]
    return subprocess.run(
        ["bash", str(repo / "contrib/release/publish.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_publishes_every_artifact_and_the_release(tmp_path: Path, gitea: FakeGitea) -> None:
    repo = make_checkout(tmp_path)
    done = publish(repo, gitea)
    assert done.returncode == 0, done.stdout + done.stderr
    dist = repo / "dist"
    authed = [s for s in gitea.seen if s.auth is not None]
    assert {s.auth for s in authed} == {AUTH}
    # Nothing else than what the script is for was asked.
    paths = [(s.method, s.path) for s in authed]

    uploads = [s for s in authed if s.path == "/api/packages/owner/pypi"]
    assert {s.method for s in uploads} == {"POST"}
    names = {
        n
        for s in uploads
        for n in (f"labctl-{VERSION}.tar.gz", f"labctl-{VERSION}-py3-none-any.whl")
        if n.encode() in s.body
    }
    assert names == {f"labctl-{VERSION}.tar.gz", f"labctl-{VERSION}-py3-none-any.whl"}

    def body(method: str, path: str) -> bytes:
        (found,) = [s.body for s in authed if (s.method, s.path) == (method, path)]
        return found

    base = "/api/packages/owner"
    deb = f"labctl_{VERSION}_amd64.deb"
    assert body("PUT", f"{base}/debian/pool/bookworm/main/upload") == (dist / deb).read_bytes()
    rpm = f"labctl-{VERSION}-1.x86_64.rpm"
    assert body("PUT", f"{base}/rpm/upload") == (dist / rpm).read_bytes()
    for name in ("labctl.pyz", "SHA256SUMS"):
        assert body("PUT", f"{base}/generic/labctl/{VERSION}/{name}") == (dist / name).read_bytes()

    release = json.loads(body("POST", "/api/v1/repos/owner/labctl/releases"))
    assert release == {
        "tag_name": f"v{VERSION}",
        "name": f"labctl {VERSION}",
        "body": "- labd: one thing\n",
        "draft": False,
        "prerelease": False,
    }
    assets = sorted(
        p.split("?name=")[1]
        for m, p in paths
        if p.startswith("/api/v1/repos/owner/labctl/releases/42/assets")
    )
    assert assets == sorted(
        [
            f"labctl-{VERSION}.tar.gz",
            f"labctl-{VERSION}-py3-none-any.whl",
            deb,
            rpm,
            "labctl.pyz",
            "SHA256SUMS",
        ]
    )
    # The token never shows in what the script prints.
    assert "s3cret-token" not in done.stdout + done.stderr


def test_refuses_artifacts_that_do_not_match_their_checksums(
    tmp_path: Path, gitea: FakeGitea
) -> None:
    repo = make_checkout(tmp_path)
    (repo / "dist" / "labctl.pyz").write_bytes(b"something else")
    done = publish(repo, gitea)
    assert done.returncode != 0
    assert "labctl.pyz: FAILED" in done.stdout + done.stderr
    assert gitea.seen == []


def test_refuses_a_missing_artifact(tmp_path: Path, gitea: FakeGitea) -> None:
    repo = make_checkout(tmp_path)
    (repo / "dist" / "release-notes.md").unlink()
    done = publish(repo, gitea)
    assert done.returncode == 1
    assert "publish: dist/release-notes.md is missing" in done.stderr
    assert gitea.seen == []
