"""labctl's identity commands and lab-agent enrollment against the real labd (in-process, TLS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from lab import pki
from lab.agent.identity import enroll, renew
from lab.cli.login import login
from lab.client.api import LabClient
from lab.client.settings import load_settings
from lab.errors import Unauthenticated
from tests.labd.harness import RunningLabd, running_labd


async def labctl(*args: str, home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "LABCTL_HOME": str(home)}
    return await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=env,
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def labctl_json(*args: str, home: Path) -> Any:
    done = await labctl(*args, "-o", "json", home=home)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def ca_fingerprint(labd: RunningLabd) -> str:
    return pki.load_ca_bundle(labd.ca_pem())[0].fingerprint()


async def test_login_with_the_bootstrap_token_then_tokens_and_certs(
    tmp_path: Path, labctl_home: Path
) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            result = await login(
                labd.url,
                labd.bootstrap_token(),
                username="ann",
                ca_fingerprint=ca_fingerprint(labd),
                tofu=False,
            )
            assert result.user == "ann" and "admin" in result.roles
            assert load_settings().server == labd.url
            # The bootstrap token is one-time.
            with pytest.raises(Unauthenticated):
                await login(labd.url, labd.bootstrap_token(), username="eve", tofu=True)

            me = await labctl_json("whoami", home=labctl_home)
            assert (me["kind"], me["name"]) == ("user", "ann")
            assert "admin" in me["roles"]

            created = await labctl_json(
                "tokens",
                "create",
                "--kind",
                "agent",
                "--ttl",
                "10m",
                "--description",
                "rack 1",
                home=labctl_home,
            )
            assert created["token"].startswith(created["id"] + ".")
            listed = await labctl_json("tokens", "list", home=labctl_home)
            [mine] = [t for t in listed if t["id"] == created["id"]]
            assert "token" not in mine and mine["description"] == "rack 1"

            plain = await labctl(
                "tokens",
                "create",
                "--kind",
                "user",
                "--user",
                "vic",
                "--roles",
                "viewer",
                home=labctl_home,
            )
            assert plain.returncode == 0, plain.stderr
            assert b"will not be shown again" in plain.stderr
            assert plain.stdout.count(b".") == 1
            bad_ttl = await labctl(
                "tokens", "create", "--kind", "user", "--ttl", "soon", home=labctl_home
            )
            assert bad_ttl.returncode == 2 and b"ttl" in bad_ttl.stderr

            identity = await enroll(
                labd.url,
                created["token"],
                hostname="web1",
                facts={"os": "linux"},
                ca_fingerprint=ca_fingerprint(labd),
                tofu=False,
                state_dir=tmp_path / "agent",
            )
            assert identity.subject == "server/web1"
            await renew(tmp_path / "agent")

            certs = await labctl_json("certs", "list", "--subject", "server/web1", home=labctl_home)
            assert {c["subject"] for c in certs} == {"server/web1"} and len(certs) == 2

            revoked = await labctl("certs", "revoke", "server/web1", home=labctl_home)
            assert revoked.returncode == 0, revoked.stderr
            assert b"revoked 2 certificate(s)" in revoked.stdout
            with pytest.raises(Unauthenticated):
                await renew(tmp_path / "agent")

            for args in (
                ("whoami",),
                ("tokens", "list", "-o", "wide"),
                ("certs", "list"),
                ("ca", "show"),
            ):
                table = await labctl(*args, home=labctl_home)
                assert table.returncode == 0, table.stderr
            assert b"user/ann" in (await labctl("whoami", home=labctl_home)).stdout

            gone = await labctl("tokens", "revoke", created["id"], home=labctl_home)
            assert gone.returncode == 0, gone.stderr
            listed = await labctl_json("tokens", "list", home=labctl_home)
            [mine] = [t for t in listed if t["id"] == created["id"]]
            assert mine["revoked_at"] is not None


async def test_ca_rotation_from_the_cli(tmp_path: Path, labctl_home: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            old_fp = ca_fingerprint(labd)
            await login(labd.url, labd.bootstrap_token(), username="ann", ca_fingerprint=old_fp)
            async with LabClient.from_settings() as client:
                agent_token = (
                    await client.post(
                        "/api/tokens",
                        {
                            "kind": "agent",
                            "ttl_seconds": 600,
                            "roles": [],
                            "reusable": False,
                            "max_uses": None,
                            "description": "",
                        },
                    )
                )["token"]
            await enroll(
                labd.url,
                agent_token,
                hostname="web2",
                facts={},
                ca_fingerprint=old_fp,
                tofu=False,
                state_dir=tmp_path / "agent",
            )

            shown = await labctl_json("ca", "show", home=labctl_home)
            assert shown["fingerprint"] == old_fp and shown["rotating"] is False

            started = await labctl_json("ca", "rotate", home=labctl_home)
            assert started["rotating"] is True
            states = {c["state"] for c in started["cas"]}
            assert "next" in states or "old" in states
            # labctl renewed its own certificate; the agent is still pending.
            status = await labctl_json("ca", "show", home=labctl_home)
            assert "server/web2" in status["pending"]
            assert "user/ann" not in status["pending"]

            refused = await labctl("ca", "rotate", "--finish", home=labctl_home)
            assert refused.returncode == 1
            assert b"server/web2" in refused.stderr and b"--force" in refused.stderr

            await renew(tmp_path / "agent")
            finished = await labctl_json("ca", "rotate", "--finish", home=labctl_home)
            assert finished["rotating"] is False
            assert finished["fingerprint"] != old_fp
            assert load_settings().ca_fingerprint == finished["fingerprint"]
            # labctl and the agent still reach labd after the old CA is gone.
            me = await labctl_json("whoami", home=labctl_home)
            assert me["name"] == "ann"
            await renew(tmp_path / "agent")
