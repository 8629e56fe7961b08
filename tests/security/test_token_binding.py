"""User tokens are bound to one user: a token never enrolls another name, never changes an
existing user's roles, and labctl login takes the name from labd, not from the local login."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from lab import pki
from lab.cli.login import login
from tests.labd.harness import Credentials, RunningLabd, running_labd


async def user_enroll(labd: RunningLabd, token: str, username: str | None) -> httpx.Response:
    body: dict[str, Any] = {"token": token, "csr": pki.make_csr(pki.generate_key(), "x").decode()}
    if username is not None:
        body["username"] = username
    async with labd.client() as http:
        return await http.post("/api/auth/user-enroll", json=body)


async def roles_of(labd: RunningLabd, admin: Credentials, name: str) -> list[str]:
    async with labd.client(admin) as http:
        resp = await http.get(f"/api/users/{name}")
    assert resp.status_code == 200, resp.text
    roles: list[str] = resp.json()["roles"]
    return roles


async def test_a_users_token_cannot_enroll_the_admin(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.enroll_user("root", labd.bootstrap_token())
            async with labd.client(admin) as http:
                made = await http.post("/api/users", json={"name": "viewer1", "roles": ["viewer"]})
            assert made.status_code == 201, made.text
            token = made.json()["token"]

            stolen = await user_enroll(labd, token, "root")
            assert stolen.status_code == 403, stolen.text
            assert stolen.json()["error"]["details"]["reason"] == "token_user_mismatch"
            assert await roles_of(labd, admin, "root") == ["admin"]  # no viewer denies either
            minted = await user_enroll(labd, token, "evil")
            assert minted.status_code == 403
            async with labd.client(admin) as http:
                assert (await http.get("/api/users/evil")).status_code == 404

            # Nothing was used up: the rightful user enrolls, named by the token alone.
            ok = await user_enroll(labd, token, None)
            assert ok.status_code == 201, ok.text
            assert (ok.json()["user"], ok.json()["roles"]) == ("viewer1", ["viewer"])
            cert = pki.cert_info(ok.json()["certificate"].encode())
            assert cert.subject == "user/viewer1"


async def test_a_user_token_never_changes_an_existing_users_roles(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.enroll_user("root", labd.bootstrap_token())
            async with labd.client(admin) as http:
                made = await http.post("/api/users", json={"name": "ann", "roles": ["viewer"]})
            assert made.status_code == 201, made.text
            token = await labd.create_token(admin, "user", user="ann", roles=["admin"])
            again = await user_enroll(labd, token, "ann")
            assert again.status_code == 201, again.text
            assert again.json()["roles"] == ["viewer"]
            assert await roles_of(labd, admin, "ann") == ["viewer"]
            # Roles of an existing user change only through users grant.
            async with labd.client(admin) as http:
                granted = await http.post("/api/users/ann/grant", json={"roles": ["operator"]})
                assert granted.status_code == 200, granted.text
                bad = await http.post("/api/users/ann/grant", json={"roles": ["nope"]})
                assert bad.status_code == 400
            assert sorted(await roles_of(labd, admin, "ann")) == ["operator", "viewer"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "user", "roles": ["viewer"]}, "body.user"),
        ({"kind": "agent", "user": "ann"}, "body.user"),
        ({"kind": "user", "user": "ann", "hostname": "n1"}, "body.hostname"),
        ({"kind": "agent", "replace": True}, "body.replace"),
        ({"kind": "user", "user": "Not A Name"}, "body.user"),
    ],
)
async def test_token_bindings_are_checked_at_creation(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await http.post("/api/tokens", json=body)
            assert resp.status_code == 400, resp.text
            assert field in resp.json()["error"]["details"]["fields"]


async def test_labctl_login_takes_the_name_from_labd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("LOGNAME", "root")
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.enroll_user("root", labd.bootstrap_token())
            token = await labd.create_token(admin, "user", user="ann", roles=["viewer"])
            result = await login(labd.url, token, tofu=True, directory=tmp_path / "home")
            assert (result.user, result.roles) == ("ann", ("viewer",))
            cert = pki.cert_info((tmp_path / "home" / "cert.pem").read_bytes())
            assert cert.subject == "user/ann"
            assert os.environ["USER"] == "root"
            listed = await labd.create_token(admin, "user", user="bob")
            async with labd.client(admin) as http:
                items = (await http.get("/api/tokens")).json()["items"]
            [bob] = [t for t in items if listed.startswith(t["id"] + ".")]
            assert (bob["user"], bob["hostname"], bob["replace"]) == ("bob", None, False)
