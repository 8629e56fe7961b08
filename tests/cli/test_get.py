"""labctl get: one read verb for every resource type, TYPE NAME and TYPE/NAME, every -o, and
--watch on servers; against a real labd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio
import yaml

from tests.labd.harness import running_labd
from tests.servers.cli import labctl, login_env


async def test_get_reads_every_type(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await labd.enroll_user(
                "ann", await labd.create_token(admin, "user", user="ann", roles=["viewer"])
            )
            await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            env = login_env(labd, admin, tmp_path / "home")

            done = await labctl(env, "get", "users", "-o", "name")
            assert done.returncode == 0, done.stderr
            assert done.stdout.split() == ["user/admin", "user/ann"]
            for argv in (("users", "ann"), ("user", "ann"), ("user/ann",), ("users", "user/ann")):
                done = await labctl(env, "get", *argv, "-o", "json")
                assert done.returncode == 0, (argv, done.stderr)
                assert [u["name"] for u in json.loads(done.stdout)] == ["ann"], argv
            done = await labctl(env, "get", "user/ann", "-o", "jsonpath={.roles[*]}")
            assert done.stdout == "viewer\n"

            done = await labctl(env, "get", "roles", "viewer", "-o", "yaml")
            (role,) = yaml.safe_load(done.stdout)
            assert role["name"] == "viewer" and role["permissions"]
            done = await labctl(env, "get", "roles")
            assert done.stdout.splitlines()[0].split() == [
                "NAME",
                "BUILTIN",
                "RULES",
                "DESCRIPTION",
            ]

            tokens = json.loads((await labctl(env, "get", "tokens", "-o", "json")).stdout)
            assert tokens, "the tokens created above"
            first = tokens[0]["id"]
            done = await labctl(env, "get", f"token/{first}", "-o", "name")
            assert done.stdout == f"token/{first}\n"

            certs = json.loads((await labctl(env, "get", "certs", "-o", "json")).stdout)
            serial = next(c["serial"] for c in certs if c["subject"] == "server/web1")
            done = await labctl(env, "get", "cert", serial, "-o", "jsonpath={.subject}")
            assert done.stdout == "server/web1\n"

            done = await labctl(env, "get", "audit/1", "-o", "json")
            assert done.returncode == 0, done.stderr
            assert [e["seq"] for e in json.loads(done.stdout)] == [1]
            done = await labctl(env, "get", "audit", "2", "audit/1", "-o", "name")
            assert done.stdout == "audit/2\naudit/1\n"
            done = await labctl(env, "get", "audit/999999")
            assert done.returncode == 4 and "audit/999999 not found" in done.stderr

            # The X list commands are the same read.
            listed = await labctl(env, "users", "list", "-o", "json")
            got = await labctl(env, "get", "users", "-o", "json")
            assert json.loads(listed.stdout) == json.loads(got.stdout)

            # A name that does not exist: exit 4, one error line.
            done = await labctl(env, "get", "users", "nobody")
            assert done.returncode == 4
            assert done.stderr.splitlines() == [
                "error: user/nobody not found",
                "hint: labctl get users",
            ]
            done = await labctl(env, "get", "server/nope")
            assert done.returncode == 4
            done = await labctl(env, "get", "server/web1", "user/ann")
            assert done.returncode == 2
            assert "one resource type at a time" in done.stderr
            done = await labctl(env, "get", "pod/x")
            assert done.returncode == 2 and "unknown resource 'pod/x'" in done.stderr
            done = await labctl(env, "get")
            assert done.returncode == 2 and "name a resource type" in done.stderr


async def test_get_servers_watch_prints_changes(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            env = login_env(labd, admin, tmp_path / "home")
            proc = subprocess.Popen(
                [sys.executable, "-m", "lab.cli.main", "get", "servers", "--watch"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stdout is not None
                readline = proc.stdout.readline
                assert (await trio.to_thread.run_sync(readline)).split()[0] == "NAME"
                assert (await trio.to_thread.run_sync(readline)).split()[:3] == [
                    "web1",
                    "offline",
                    "-",
                ]
                async with labd.client(admin) as http:
                    response = await http.patch(
                        "/api/servers/web1/labels", json={"set": {"role": "web"}, "remove": []}
                    )
                    assert response.status_code == 200
                changed = await trio.to_thread.run_sync(readline)
                assert changed.split()[:3] == ["web1", "offline", "role=web"]
            finally:
                proc.terminate()
                proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()
