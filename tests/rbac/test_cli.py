"""labctl users, roles, auth, audit, get audit and logs audit against a real labd; editing or
deleting an audit row with the sqlite3 shell makes `labctl audit verify` fail and name it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from lab import pki
from tests.labd.harness import RunningLabd, running_labd


async def labctl(*args: str, home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
    env["LABCTL_HOME"] = str(home)
    return await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=env,
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def ok(*args: str, home: Path) -> str:
    done = await labctl(*args, home=home)
    assert done.returncode == 0, (args, done.stderr.decode())
    return done.stdout.decode()


async def as_json(*args: str, home: Path) -> Any:
    return json.loads(await ok(*args, "-o", "json", home=home))


async def login(labd: RunningLabd, home: Path, name: str, token: str) -> None:
    fingerprint = pki.load_ca_bundle(labd.ca_pem())[0].fingerprint()
    await ok(
        "login",
        "--server",
        labd.url,
        "--token",
        token,
        "--username",
        name,
        "--ca-fingerprint",
        fingerprint,
        home=home,
    )


def sql(db: Path, statement: str) -> None:
    """Run ``statement`` with the sqlite3 shell if installed, else Python's sqlite3."""
    if shutil.which("sqlite3"):
        subprocess.run(["sqlite3", str(db), statement], check=True, capture_output=True)
    else:
        conn = sqlite3.connect(db)
        conn.execute(statement)
        conn.commit()
        conn.close()


async def test_users_roles_and_auth_commands(tmp_path: Path) -> None:
    admin_home, ann_home = tmp_path / "admin", tmp_path / "ann"
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            await login(labd, admin_home, "root", labd.bootstrap_token())

            created = await as_json("users", "create", "ann", "--role", "operator", home=admin_home)
            assert created["name"] == "ann" and created["roles"] == ["operator"]
            plain = await labctl("users", "create", "bob", "--role", "viewer", home=admin_home)
            assert plain.returncode == 0
            assert plain.stdout.decode().count("\n") == 1  # only the token on stdout
            assert "will not be shown again" in plain.stderr.decode()
            unknown = await labctl("users", "create", "eve", "--role", "nope", home=admin_home)
            assert unknown.returncode == 2 and "unknown role" in unknown.stderr.decode()
            users = {u["name"]: u for u in await as_json("users", "list", home=admin_home)}
            assert users["ann"]["roles"] == ["operator"] and users["bob"]["roles"] == ["viewer"]
            await login(labd, ann_home, "ann", created["token"])

            await ok("roles", "create", "web-ops", "--description", "web exec", home=admin_home)
            await ok("roles", "allow", "web-ops", "exec:*", "server/web-*", home=admin_home)
            await ok("roles", "deny", "web-ops", "exec:*", "server/web-db", home=admin_home)
            role = await as_json("roles", "describe", "web-ops", home=admin_home)
            assert [(p["effect"], p["resource"]) for p in role["permissions"]][1:] == [
                ("allow", "server/web-*"),
                ("deny", "server/web-db"),
            ]
            await ok(
                "roles", "deny", "web-ops", "exec:*", "server/web-db", "--remove", home=admin_home
            )
            table = await ok("roles", "describe", "web-ops", home=admin_home)
            assert "server/web-db" not in table and "server/web-*" in table
            listed = await ok("roles", "list", home=admin_home)
            assert "web-ops" in listed and "operator" in listed
            builtin = await labctl("roles", "allow", "viewer", "*:*", "*", home=admin_home)
            assert builtin.returncode == 1 and "builtin" in builtin.stderr.decode()
            await ok("roles", "delete", "web-ops", home=admin_home)
            gone = await labctl("roles", "describe", "web-ops", home=admin_home)
            assert gone.returncode == 4

            yes = await labctl("auth", "can-i", "users:create", "user/*", home=admin_home)
            assert (yes.returncode, yes.stdout.decode().strip()) == (0, "yes")
            no = await labctl("auth", "can-i", "users:create", "user/*", home=ann_home)
            assert no.returncode == 3 and no.stdout.decode().startswith("no")
            as_ann = await labctl(
                "auth", "can-i", "exec:run", "server/web1", "--as", "ann", home=admin_home
            )
            assert as_ann.returncode == 0
            as_bob = await labctl(
                "auth", "can-i", "exec:run", "server/web1", "--as", "bob", home=admin_home
            )
            assert as_bob.returncode == 3
            explained = await ok(
                "auth", "explain", "bob", "exec:run", "server/web1", home=admin_home
            )
            assert explained.startswith("DENIED")
            assert "viewer: deny exec:* *" in explained
            why = await as_json("auth", "explain", "ann", "users:create", "user/x", home=admin_home)
            assert why["allowed"] is False and why["decided_by"]["action"] == "users:*"

            out = await ok("users", "disable", "ann", home=admin_home)
            assert "1 certificate(s) revoked" in out
            after = await labctl("whoami", home=ann_home)
            assert after.returncode == 3
            await ok("users", "enable", "ann", home=admin_home)


async def test_audit_commands_and_tamper_evidence(tmp_path: Path) -> None:
    home = tmp_path / "admin"
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            await login(labd, home, "root", labd.bootstrap_token())
            await ok("users", "create", "ann", "--role", "viewer", home=home)
            await ok("users", "list", home=home)
            await labctl("users", "disable", "nobody", home=home)  # an error, audited too

            entries = await as_json("get", "audit", "--since", "10m", home=home)
            actions = [e["action"] for e in entries]
            # users:create commits with the new user; the token made after it follows.
            assert actions[:5] == [
                "auth:user-enroll",
                "users:create",
                "users:create",
                "users:list",
                "users:disable",
            ]
            assert entries[2]["details"]["follows"] == entries[1]["seq"]
            assert "token_id" in entries[2]["details"]
            assert entries[4]["result"] == "error"
            mine = await as_json(
                "get", "audit", "--user", "user/root", "--action", "users:list", home=home
            )
            assert [e["action"] for e in mine] == ["users:list"]
            table = await ok("get", "audit", home=home)
            assert table.splitlines()[0].split() == [
                "SEQ",
                "TIME",
                "USER",
                "ACTION",
                "RESOURCE",
                "RESULT",
            ]

            lines = (await ok("logs", "audit", home=home)).splitlines()
            assert len(lines) >= 5 and "users:create user/* success" in lines[1]
            exported = [
                json.loads(x)
                for x in (await ok("audit", "export", "--since", "1h", home=home)).splitlines()
            ]
            assert [e["seq"] for e in exported] == list(range(1, len(exported) + 1))
            assert "chain ok" in await ok("audit", "verify", home=home)

            db = labd.data_dir / "labd.db"
            sql(db, "DELETE FROM audit WHERE seq = 6")
            deleted = await labctl("audit", "verify", home=home)
            assert deleted.returncode == 1
            assert "broken at entry #7" in deleted.stderr.decode()
            assert "missing (deleted)" in deleted.stderr.decode()

            sql(db, "UPDATE audit SET result = 'success' WHERE seq = 5")
            edited = await labctl("audit", "verify", home=home)
            assert edited.returncode == 1, edited.stderr.decode()
            message = edited.stderr.decode()
            assert "broken at entry #5" in message and "edited" in message
            as_data = await labctl("audit", "verify", "-o", "json", home=home)
            assert as_data.returncode == 1
            verdict = json.loads(as_data.stdout)
            assert verdict["ok"] is False and verdict["broken_at"] == 5
            assert verdict["kind"] == "edited"
            assert verdict["entry"]["action"] == "users:disable"


async def test_logs_audit_follow_prints_new_entries(tmp_path: Path) -> None:
    home = tmp_path / "admin"
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            await login(labd, home, "root", labd.bootstrap_token())
            env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
            env["LABCTL_HOME"] = str(home)
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "lab.cli.main", "logs", "audit", "-f"],
                env=env,
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            try:
                assert proc.stdout is not None
                seen = b""

                async def wait_for(text: bytes) -> None:
                    nonlocal seen
                    while text not in seen:
                        chunk = await proc.stdout.receive_some()  # type: ignore[union-attr]
                        assert chunk, seen
                        seen += chunk

                await wait_for(b"auth:user-enroll")
                await ok("roles", "list", home=home)
                await wait_for(b"roles:list role/* success")
            finally:
                proc.kill()
                await proc.wait()


async def test_a_viewers_exec_and_logs_are_refused_and_audited_as_denied(tmp_path: Path) -> None:
    admin_home, vic_home = tmp_path / "admin", tmp_path / "vic"
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            await login(labd, admin_home, "root", labd.bootstrap_token())
            vic = await as_json("users", "create", "vic", "--role", "viewer", home=admin_home)
            await login(labd, vic_home, "vic", vic["token"])
            refused = await labctl("exec", "server/web1", "--", "true", home=vic_home)
            assert refused.returncode == 3
            assert "may not exec:run on server/web1" in refused.stderr.decode()
            logs = await labctl("logs", "server/web1", home=vic_home)
            assert logs.returncode == 3
            entries = await as_json("get", "audit", "--user", "user/vic", home=admin_home)
            denied = {(e["action"], e["resource"]) for e in entries if e["result"] == "denied"}
            assert {("exec:run", "server/web1"), ("logs:read", "server/web1")} <= denied
