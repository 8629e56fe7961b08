"""labctl provision and labctl init bastion standalone, as real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bastion.conftest import SSH_KEY

MAC = "52:54:00:12:34:56"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(app: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    module, name = app.split(":")
    code = f"from {module} import {name} as a; a()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "LAB_BASTION_DATA_DIR": str(tmp_path / "data"),
        "LAB_BASTION_PORT": str(port),
        "LAB_BASTION_HOST": "127.0.0.1",
        "LABCTL_BASTION_URL": f"http://127.0.0.1:{port}",
    }
    started = _run("lab.cli.init_bastion:bastion_app", "standalone", "start", "--no-dhcp", env=env)
    try:
        assert started.returncode == 0, started.stderr
        yield env
    finally:
        stopped = _run("lab.cli.init_bastion:bastion_app", "standalone", "stop", env=env)
        assert "stopped" in stopped.stdout


def test_standalone_and_provision_commands(standalone: dict[str, str], tmp_path: Path) -> None:
    env = standalone
    status = _run("lab.cli.init_bastion:bastion_app", "standalone", "status", "-o", "json", env=env)
    report = json.loads(status.stdout)
    assert report["running"] and report["healthy"]
    log = Path(report["log"]).read_text()
    assert "HTTP only" in log  # says DHCP is off

    again = _run("lab.cli.init_bastion:bastion_app", "standalone", "start", env=env)
    assert again.returncode != 0 and "already running" in again.stderr

    p = "lab.cli.provision:provision_app"
    keyfile = tmp_path / "id.pub"
    keyfile.write_text(SSH_KEY + "\n")
    r = _run(
        p,
        "install",
        "52-54-00-12-34-56",
        "node1",
        "--role",
        "infra",
        "--ssh-key-file",
        str(keyfile),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "queued" in r.stdout and MAC in r.stdout

    bad = _run(p, "install", MAC, "bad_host", env=env)
    assert bad.returncode == 2
    # The user's words, not the API's field path (body.hostname).
    assert bad.stderr == "error: not an RFC 1123 hostname: 'bad_host'\n"

    listed = json.loads(_run(p, "list", "-o", "json", env=env).stdout)
    assert [(m["mac"], m["state"], m["role"]) for m in listed] == [(MAC, "queued", "infra")]
    shown = json.loads(_run(p, "show", MAC, "-o", "json", env=env).stdout)
    assert shown["settings"]["ssh_keys"] == [SSH_KEY]

    # Reprovision needs an installed machine.
    assert _run(p, "reprovision", MAC, "--dry-run", env=env).returncode == 1
    missing = _run(p, "show", "52:54:00:00:00:00", env=env)
    assert missing.returncode == 4

    forgot = _run(p, "forget", MAC, env=env)
    assert forgot.returncode == 0
    assert json.loads(_run(p, "list", "-o", "json", env=env).stdout) == []

    noauth = _run(p, "list", "--token-file", str(keyfile), env=env)
    assert noauth.returncode == 3


def test_reprovision_dry_run_prints_kept_and_formatted(
    standalone: dict[str, str],
) -> None:
    import httpx

    env = standalone
    url = env["LABCTL_BASTION_URL"]
    token = (Path(env["LAB_BASTION_DATA_DIR"]) / "admin-token").read_text().strip()
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=10) as c:
        c.post(
            "/api/install", json={"mac": MAC, "hostname": "w1", "role": "worker"}, headers=admin
        ).raise_for_status()
        script = c.get("/dispatch", params={"mac": MAC}).text
        cb = script.split("token=")[1].split()[0]
        c.post(
            "/api/progress",
            json={"mac": MAC, "phase": "post", "percent": 100},
            headers={"Authorization": f"Bearer {cb}"},
        ).raise_for_status()
    p = "lab.cli.provision:provision_app"
    r = _run(p, "reprovision", MAC, "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"would reprovision w1 ({MAC}, role worker) on /dev/sda",
        "keep (not formatted): /home /srv /var/lib/longhorn",
        "format:               /boot / /var",
    ]
    state = json.loads(_run(p, "show", MAC, "-o", "json", env=env).stdout)["state"]
    assert state == "installed"
    w = _run(p, "watch", MAC, "--until-done", env=env)
    assert w.returncode == 0 and "installed" in w.stdout and "install complete" not in w.stderr
