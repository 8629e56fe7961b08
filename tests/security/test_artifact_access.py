"""Abuse cases of artifacts: who else could present this, and what would they get?

- an agent (any enrolled node) may read an artifact to install it, but never add, replace,
  list or delete one: a compromised node must not plant a binary other nodes install;
- a viewer reads, never writes; a user allowed artifacts:create on one name only writes that;
- no client certificate: nothing;
- a name or version that is not plain (a path, a wildcard) is refused before any file is made.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.labd.harness import running_labd

KEY = "/api/artifacts/k3s/v1.31.4+k3s1/amd64"


async def test_who_may_write_and_read_artifacts(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            async with labd.client(admin) as http:
                assert (await http.put(KEY, content=b"the real k3s")).status_code == 201
                made = await http.post(
                    "/api/roles",
                    json={
                        "name": "k3s-uploader",
                        "permissions": [
                            {"effect": "allow", "action": "artifacts:*", "resource": "artifact/k3s"}
                        ],
                    },
                )
                assert made.status_code == 201, made.text
            agent = await labd.enroll_agent("node1", await labd.create_token(admin, "agent"))
            async with labd.client(agent) as http:
                assert (await http.put(KEY, content=b"evil")).status_code == 403
                assert (
                    await http.put(KEY.replace("k3s/", "k3s-evil/"), content=b"x")
                ).status_code == 403
                assert (await http.delete(KEY)).status_code == 403
                assert (await http.get("/api/artifacts")).status_code == 403
                assert (await http.get(KEY)).status_code == 200
                got = await http.get(KEY + "/content")
                assert (got.status_code, got.content) == (200, b"the real k3s")

            token = await labd.create_token(admin, "user", user="vera", roles=["viewer"])
            viewer = await labd.enroll_user("vera", token)
            async with labd.client(viewer) as http:
                assert (await http.get("/api/artifacts")).status_code == 200
                assert (await http.put(KEY, content=b"evil")).status_code == 403
                assert (await http.delete(KEY)).status_code == 403

            token = await labd.create_token(admin, "user", user="ulla", roles=["k3s-uploader"])
            uploader = await labd.enroll_user("ulla", token)
            async with labd.client(uploader) as http:
                ok = await http.put(KEY.replace("amd64", "arm64"), content=b"arm")
                assert ok.status_code == 201, ok.text
                other = await http.put("/api/artifacts/cilium/v1/amd64", content=b"x")
                assert other.status_code == 403

            async with labd.client() as anonymous:
                assert (await anonymous.get(KEY + "/content")).status_code == 401
                assert (await anonymous.put(KEY, content=b"evil")).status_code == 401

            stored = await labd.context.artifacts.list()
            assert [(a.name, a.arch, a.size) for a in stored] == [
                ("k3s", "amd64", len(b"the real k3s")),
                ("k3s", "arm64", 3),
            ]
            denied = await labd.context.store.audit.list(action="artifacts:create")
            assert {(e.user, e.result) for e in denied if e.result == "denied"} == {
                ("server/node1", "denied"),
                ("user/vera", "denied"),
                ("user/ulla", "denied"),
                ("", "denied"),  # the anonymous attempt
            }


async def test_names_that_are_not_plain_never_reach_the_disk(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            async with labd.client(admin) as http:
                for path, field in (
                    ("/api/artifacts/..%2F..%2Fetc/v1/amd64", "name"),
                    ("/api/artifacts/k3s/..%2Fx/amd64", "version"),
                    ("/api/artifacts/k3s/v1/amd*", "arch"),
                    ("/api/artifacts/k3s/v1/AMD64", "arch"),
                ):
                    resp = await http.put(path, content=b"x")
                    assert resp.status_code in (400, 404), (path, resp.text)
                    if resp.status_code == 400:
                        assert resp.json()["error"]["details"]["fields"] == [field]
            assert await labd.context.artifacts.list() == []
            assert not (labd.data_dir / "artifacts" / "sha256").exists() or not list(
                (labd.data_dir / "artifacts" / "sha256").iterdir()
            )
            assert not (tmp_path / "etc").exists()
