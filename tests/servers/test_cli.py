"""labctl get servers / describe / label as real processes against a real labd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import yaml

from lab.cli.resources import parse_resource
from lab.errors import Invalid
from tests.labd.harness import running_labd
from tests.servers.cli import labctl, login_env
from tests.servers.seam import mark_online

FACTS = {"os": "linux", "load": [0.5, 0.4, 0.3], "agent_version": "9.9.9", "cpus": 4}


def test_parse_resource() -> None:
    assert parse_resource("server/web1") == ("server", "web1")
    assert parse_resource("Servers/web1") == ("server", "web1")
    for bad in ("web1", "server/", "/web1", "server/a/b"):
        with pytest.raises(Invalid, match="TYPE/NAME"):
            parse_resource(bad)
    with pytest.raises(Invalid, match="unknown resource type 'pod'") as info:
        parse_resource("pod/web1")
    assert info.value.details["hint"] == "valid types: server/NAME, cluster/NAME"
    assert parse_resource("clusters/home") == ("cluster", "home")
    # A command narrows the types: describe's cluster is not a server.
    with pytest.raises(Invalid, match="unknown resource type 'cluster'") as info:
        parse_resource("cluster/home", allowed=("server",))
    assert info.value.details["hint"] == "valid types: server/NAME"


async def test_get_describe_label(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent", reusable=True)
            for name in ("web1", "db1"):
                await labd.enroll_agent(name, token, FACTS)
            await mark_online(labd, "web1", replica="replica-a")
            env = login_env(labd, admin, tmp_path / "home")

            done = await labctl(env, "label", "server/web1", "role=web", "zone=a")
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "server/web1 labeled: role=web,zone=a"
            done = await labctl(env, "label", "servers/db1", "role=db", "-o", "json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["labels"] == {"role": "db"}

            done = await labctl(env, "get", "servers")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines[0].split() == ["NAME", "STATUS", "LABELS", "AGE", "LAST-SEEN"]
            assert lines[1].split()[:3] == ["db1", "offline", "role=db"]
            assert lines[1].split()[-1] == "-"  # never seen
            assert lines[2].split()[:3] == ["web1", "online", "role=web,zone=a"]

            done = await labctl(env, "get", "servers", "-o", "wide", "-l", "role=web")
            assert done.returncode == 0, done.stderr
            header, row = done.stdout.splitlines()
            assert header.split()[-3:] == ["VERSION", "REPLICA", "CERT-EXPIRY"]
            assert row.split()[0] == "web1"
            assert row.split()[-4:-1] == ["9.9.9", "replica-a", "in"]

            done = await labctl(env, "get", "servers", "--status", "offline", "-o", "json")
            assert done.returncode == 0, done.stderr
            items = json.loads(done.stdout)
            assert [i["name"] for i in items] == ["db1"]
            assert items[0]["facts"] == {"os": "linux", "load": [0.5, 0.4, 0.3]}

            done = await labctl(env, "get", "servers", "-l", "role=web", "-l", "zone=b")
            assert done.returncode == 0 and done.stdout == ""
            assert "no servers" in done.stderr

            done = await labctl(env, "describe", "server/web1")
            assert done.returncode == 0, done.stderr
            text = done.stdout
            assert "Status:         online (connected to replica replica-a)" in text
            assert "Agent version:  9.9.9" in text
            assert "  role=web" in text and "  cpus: 4" in text and "  load: 0.5 0.4 0.3" in text
            done = await labctl(env, "describe", "server/web1", "-o", "yaml")
            assert yaml.safe_load(done.stdout)["facts"] == FACTS

            done = await labctl(env, "label", "server/web1", "zone-", "tier=gold")
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "server/web1 labeled: role=web,tier=gold"


async def test_cli_errors_and_exit_codes(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            viewer = await labd.enroll_user(
                "vera", await labd.create_token(admin, "user", user="vera", roles=["viewer"])
            )
            env = login_env(labd, admin, tmp_path / "admin")

            done = await labctl(env, "describe", "server/nope")
            assert done.returncode == 4
            assert done.stderr.startswith("error: server named 'nope' not found")
            done = await labctl(env, "describe", "pod/web1")
            assert done.returncode == 2
            assert "unknown resource type 'pod'" in done.stderr
            assert "valid types: server/NAME" in done.stderr
            done = await labctl(env, "label", "server/web1", "bad key=x")
            assert done.returncode == 2
            assert "label key 'bad key' is not valid" in done.stderr
            done = await labctl(env, "label", "server/web1", "role")
            assert done.returncode == 2 and "KEY=VALUE or KEY-" in done.stderr
            done = await labctl(env, "label", "server/web1")
            assert done.returncode == 2 and "no label changes" in done.stderr
            done = await labctl(env, "get", "servers", "--status", "asleep")
            assert done.returncode == 2
            done = await labctl(env, "get", "servers", "-l", "role in (a")
            assert done.returncode == 2
            assert done.stderr.startswith("error: bad selector 'role in (a': '(' without ')'")

            view = login_env(labd, viewer, tmp_path / "viewer")
            done = await labctl(view, "get", "servers", "-o", "json")
            assert done.returncode == 0 and json.loads(done.stdout)[0]["name"] == "web1"
            done = await labctl(view, "label", "server/web1", "role=web")
            assert done.returncode == 3
            assert "may not servers:label on server/web1" in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
