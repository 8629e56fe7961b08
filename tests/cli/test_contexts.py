"""Contexts: two labd servers, one identity each; use-context and --context pick the server a
command talks to; the single identity of before migrates; logout forgets one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio
import yaml

from lab import pki
from lab.client.credentials import Credentials, save_credentials
from tests.labd.harness import Credentials as LabdCredentials
from tests.labd.harness import RunningLabd, running_labd


async def labctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "LABD_"))}
    env["LABCTL_HOME"] = str(home)
    proc = await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=env,
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


ADMINS: dict[str, LabdCredentials] = {}


async def log_in(home: Path, labd: RunningLabd, user: str) -> None:
    if labd.url not in ADMINS:
        ADMINS[labd.url] = await labd.admin()  # the bootstrap token: once per labd
    token = await labd.create_token(ADMINS[labd.url], "user", user=user, roles=["viewer"])
    fingerprint = pki.load_ca_bundle(labd.ca_pem())[0].fingerprint()
    done = await labctl(
        home, "login", "--server", labd.url, "--token", token, "--ca-fingerprint", fingerprint
    )
    assert done.returncode == 0, done.stderr


async def whoami(home: Path, *flags: str) -> tuple[str, str]:
    done = await labctl(home, *flags, "whoami", "-o", "json")
    assert done.returncode == 0, done.stderr
    me = json.loads(done.stdout)
    return me["server"], me["name"]


def context_of(labd: RunningLabd) -> str:
    return "127.0.0.1-" + labd.url.rsplit(":", 1)[1]


async def test_a_context_switch_changes_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with trio.fail_after(240):
        async with running_labd(tmp_path / "a") as a, running_labd(tmp_path / "b") as b:
            # The first login keeps the single identity of before, in the home itself.
            await log_in(home, a, "ann")
            assert (home / "cert.pem").exists() and not (home / "contexts").exists()
            assert await whoami(home) == (a.url, "ann")

            # Logging in to a second labd moves the first identity into a context named after
            # its server, and makes the new one current.
            await log_in(home, b, "bob")
            assert not (home / "cert.pem").exists()
            ctx_a, ctx_b = context_of(a), context_of(b)
            assert (home / "contexts" / ctx_a / "cert.pem").exists()
            assert await whoami(home) == (b.url, "bob")

            done = await labctl(home, "config", "get-contexts")
            assert done.returncode == 0, done.stderr
            rows = [line.split() for line in done.stdout.splitlines()]
            assert rows[0] == ["CURRENT", "NAME", "SERVER"]
            assert sorted(rows[1:]) == sorted([[ctx_a, a.url], ["*", ctx_b, b.url]])

            done = await labctl(home, "config", "use-context", ctx_a)
            assert done.stdout == f"switched to context {ctx_a} ({a.url})\n", done.stderr
            assert await whoami(home) == (a.url, "ann")
            # --context picks one for a single command, before or after the command words.
            assert await whoami(home, "--context", ctx_b) == (b.url, "bob")
            done = await labctl(home, "whoami", f"--context={ctx_b}", "-o", "json")
            assert json.loads(done.stdout)["server"] == b.url
            assert await whoami(home) == (a.url, "ann")

            # Logging in again to b (not current) trusts the CA its context remembers.
            token = await b.create_token(ADMINS[b.url], "user", user="bob2", roles=["viewer"])
            done = await labctl(home, "login", "--server", b.url, "--token", token)
            assert done.returncode == 0, done.stderr
            assert await whoami(home) == (b.url, "bob2")
            assert sorted(os.listdir(home / "contexts")) == sorted([ctx_a, ctx_b])
            done = await labctl(home, "config", "use-context", ctx_a)
            assert done.returncode == 0

            done = await labctl(home, "--context", "nowhere", "whoami")
            assert done.returncode == 4
            assert done.stderr.splitlines()[0] == "error: no context named 'nowhere'"
            done = await labctl(home, "config", "use-context", "nowhere")
            assert done.returncode == 4

            # logout forgets the current context only.
            done = await labctl(home, "logout")
            assert done.stdout == f"logged out of context {ctx_a} ({a.url})\n", done.stderr
            assert not (home / "contexts" / ctx_a).exists()
            done = await labctl(home, "config", "get-contexts", "-o", "name")
            assert done.stdout == f"context/{ctx_b}\n"
            assert await whoami(home, "--context", ctx_b) == (b.url, "bob2")


async def test_get_contexts_migrates_the_single_identity(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # Contents do not matter here: the files are moved, not read.
    save_credentials(home, Credentials(ca_pem=b"CA", cert_pem=b"CERT", key_pem=b"KEY"))
    (home / "config.yaml").write_text(
        "server: https://lab.example:3100\noutput: json\nca_fingerprint: SHA256:" + "a" * 64 + "\n"
    )
    done = await labctl(home, "config", "get-contexts")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {
            "current": "*",
            "name": "lab.example",
            "server": "https://lab.example:3100",
            "ca_fingerprint": "SHA256:" + "a" * 64,
        }
    ]
    moved = home / "contexts" / "lab.example"
    assert (moved / "key.pem").read_bytes() == b"KEY"
    assert (moved / "key.pem").stat().st_mode & 0o777 == 0o600
    assert not (home / "key.pem").exists()
    assert yaml.safe_load((home / "config.yaml").read_text())["context"] == "lab.example"
    done = await labctl(home, "config", "get", "server")
    assert done.stdout == "https://lab.example:3100\n"
    # With a context in use, config set server changes that context's server.
    done = await labctl(home, "config", "set", "server", "https://lab.example:3443")
    assert done.returncode == 0, done.stderr
    assert (await labctl(home, "config", "get", "server")).stdout == "https://lab.example:3443\n"
    assert "3443" in (moved / "context.yaml").read_text()
    await labctl(home, "config", "set", "server", "https://lab.example:3100")
    done = await labctl(home, "logout")
    assert done.stdout == "logged out of context lab.example (https://lab.example:3100)\n"
    done = await labctl(home, "logout")
    assert (done.returncode, done.stderr) == (0, "not logged in\n")
