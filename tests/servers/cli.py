"""Run labctl as a real process against a harness labd, as a user logged in with ``creds``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from lab.client.credentials import Credentials as Identity
from lab.client.credentials import save_credentials
from tests.labd.harness import Credentials, RunningLabd


def login_env(labd: RunningLabd, creds: Credentials, home: Path, **extra: str) -> dict[str, str]:
    """An environment whose LABCTL_HOME holds ``creds`` as ``labctl login`` writes them."""
    save_credentials(
        home, Identity(ca_pem=labd.ca_pem(), cert_pem=creds.cert_pem, key_pem=creds.key_pem)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "LAB_", "LABD_"))}
    env.update(LABCTL_HOME=str(home), LABCTL_SERVER=labd.url, **extra)
    return env


async def labctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``labctl ARGS`` in a child process; the labd under test keeps serving meanwhile."""
    proc = await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )
