"""labctl config: file round trip, environment precedence, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def labctl(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
    full_env["LABCTL_HOME"] = str(home)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lab.cli.main", *args], capture_output=True, text=True, env=full_env
    )


def test_set_then_get_and_env_wins(tmp_path: Path) -> None:
    assert labctl(tmp_path, "config", "set", "server", "https://x:3100").returncode == 0
    assert labctl(tmp_path, "config", "get", "server").stdout.strip() == "https://x:3100"
    got = labctl(tmp_path, "config", "get", "server", env={"LABCTL_SERVER": "https://y:3100"})
    assert got.stdout.strip() == "https://y:3100"
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o600


def test_config_file_can_be_pointed_elsewhere(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.yaml"
    env = {"LABCTL_CONFIG": str(other)}
    assert labctl(tmp_path, "config", "set", "output", "json", env=env).returncode == 0
    assert "output: json" in other.read_text()
    assert labctl(tmp_path, "config", "path", env=env).stdout.strip() == str(other)


def test_unknown_key_names_the_valid_keys(tmp_path: Path) -> None:
    res = labctl(tmp_path, "config", "get", "sever")
    assert res.returncode == 2
    assert "unknown config key 'sever'" in res.stderr
    assert "server" in res.stderr and "timeout" in res.stderr


def test_bad_value_is_refused_and_file_kept(tmp_path: Path) -> None:
    labctl(tmp_path, "config", "set", "timeout", "12")
    res = labctl(tmp_path, "config", "set", "timeout", "soon")
    assert res.returncode == 2 and "timeout" in res.stderr
    assert labctl(tmp_path, "config", "get", "timeout").stdout.strip() == "12.0"


@pytest.mark.parametrize(("text", "line"), [("server: [\n", ":2"), ("a: 1\n  b: 2\n", ":2")])
def test_malformed_yaml_names_file_and_line(tmp_path: Path, text: str, line: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    res = labctl(tmp_path, "config", "list")
    assert res.returncode == 2
    assert f"{tmp_path / 'config.yaml'}{line}" in res.stderr
    assert "malformed YAML" in res.stderr


def test_unknown_key_in_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("servr: https://z\n")
    res = labctl(tmp_path, "config", "get", "server")
    assert res.returncode == 2 and "servr" in res.stderr
