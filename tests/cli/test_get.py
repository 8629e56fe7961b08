"""labctl get: one read verb for every resource type, TYPE NAME and TYPE/NAME, every -o, and
--watch on servers; against a real labd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import IO

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

            # -o yaml is an apply document (docs/apply.md).
            done = await labctl(env, "get", "roles", "viewer", "-o", "yaml")
            (role,) = yaml.safe_load_all(done.stdout)
            assert role["kind"] == "Role" and role["metadata"]["name"] == "viewer"
            assert role["spec"]["rules"]
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


async def test_watch_says_when_a_server_stops_matching(tmp_path: Path) -> None:
    """Table: one line naming it; json: its last state marked gone (never a blank line)."""
    with trio.fail_after(180):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            env = login_env(labd, admin, tmp_path / "home")
            async with labd.client(admin) as http:

                async def label(body: dict[str, object]) -> None:
                    response = await http.patch("/api/servers/web1/labels", json=body)
                    assert response.status_code == 200, response.text

                for fmt in ("table", "json"):
                    await label({"set": {"role": "web"}, "remove": []})
                    argv = ["get", "servers", "-l", "role=web", "--watch"]
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "lab.cli.main", *argv, "-o", fmt],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    try:
                        assert proc.stdout is not None
                        if fmt == "table":
                            for _ in ("header", "web1"):
                                await trio.to_thread.run_sync(proc.stdout.readline)
                        else:
                            first = await _read_json(proc.stdout)
                            assert [i["name"] for i in first] == ["web1"]
                        await label({"set": {}, "remove": ["role"]})
                        if fmt == "table":
                            line = await trio.to_thread.run_sync(proc.stdout.readline)
                            assert line == "server/web1 no longer matches\n"
                        else:
                            gone = await _read_json(proc.stdout)
                            assert [(i["name"], i["gone"]) for i in gone] == [("web1", True)]
                            assert gone[0]["labels"] == {"role": "web"}  # its last state
                    finally:
                        proc.terminate()
                        proc.wait()
                        assert proc.stdout is not None and proc.stderr is not None
                        proc.stdout.close()
                        errors = proc.stderr.read()
                        proc.stderr.close()
                    assert "error" not in errors, errors


async def _read_json(stream: IO[str]) -> list[dict[str, object]]:
    """One JSON document printed by -o json (pretty-printed: read lines until it parses)."""
    text = ""
    while True:
        line = await trio.to_thread.run_sync(stream.readline)
        assert line, f"the watch ended; read {text!r}"
        text += line
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        assert isinstance(value, list)
        return value
