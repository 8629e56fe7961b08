"""labctl config set validates values (URL, format, duration) and the output setting, or
LABCTL_OUTPUT, picks the default format of every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli.test_config_cmd import labctl


def one_error(stderr: str) -> tuple[str, str | None]:
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), stderr
    return lines[0], (lines[1] if len(lines) > 1 else None)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("output", "xml", "output 'xml' is not an output format"),
        ("server", "not-a-url", "server 'not-a-url' is not a URL"),
        ("server", "ftp://lab:3100", "server 'ftp://lab:3100' is not a URL"),
        ("server", "https://lab:99999", "server 'https://lab:99999' has a bad port"),
        ("bastion", "lab.example", "bastion 'lab.example' is not a URL"),
        ("timeout", "soon", "timeout 'soon' is not a duration"),
        ("timeout", "-3", "timeout '-3' must be longer than zero"),
        ("ca-fingerprint", "abc", "ca_fingerprint 'abc' is not a CA fingerprint"),
    ],
)
def test_bad_values_exit_2_and_leave_the_file(
    tmp_path: Path, key: str, value: str, words: str
) -> None:
    res = labctl(tmp_path, "config", "set", key, value)
    assert res.returncode == 2, res.stderr
    error, _ = one_error(res.stderr)
    assert words in error
    assert not (tmp_path / "config.yaml").exists()


def test_good_values_are_stored_typed(tmp_path: Path) -> None:
    for key, value in (
        ("server", "https://lab.example:3100/"),
        ("output", "yaml"),
        ("timeout", "2m"),
        ("bastion", "http://10.0.0.2:8080"),
    ):
        res = labctl(tmp_path, "config", "set", key, value)
        assert res.returncode == 0, res.stderr
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert stored == {
        "server": "https://lab.example:3100",
        "output": "yaml",
        "timeout": 120.0,
        "bastion": "http://10.0.0.2:8080",
    }


def test_the_output_setting_is_the_default_format(tmp_path: Path) -> None:
    assert labctl(tmp_path, "config", "set", "output", "yaml").returncode == 0
    listed = labctl(tmp_path, "config", "list")
    rows = yaml.safe_load(listed.stdout)
    assert {"key": "output", "value": "yaml", "source": str(tmp_path / "config.yaml")} in rows
    # LABCTL_OUTPUT wins over the file; -o wins over both.
    as_json = labctl(tmp_path, "config", "list", env={"LABCTL_OUTPUT": "json"})
    assert {r["key"] for r in json.loads(as_json.stdout)} >= {"server", "output", "timeout"}
    table = labctl(tmp_path, "config", "list", "-o", "table", env={"LABCTL_OUTPUT": "json"})
    assert table.stdout.splitlines()[0].split() == ["KEY", "VALUE", "SOURCE"]


def test_a_bad_output_variable_names_itself(tmp_path: Path) -> None:
    res = labctl(tmp_path, "config", "list", env={"LABCTL_OUTPUT": "xml"})
    assert res.returncode == 2
    error, hint = one_error(res.stderr)
    assert error == "error: LABCTL_OUTPUT: output 'xml' is not an output format"
    assert hint is not None and "json" in hint


def test_jsonpath_and_name_outputs(tmp_path: Path) -> None:
    res = labctl(tmp_path, "config", "list", "-o", "jsonpath={.key}={.value}")
    assert res.returncode == 0, res.stderr
    assert "output=table" in res.stdout.splitlines()
    res = labctl(tmp_path, "config", "list", "-o", 'jsonpath={range .items[*]}{.key}{" "}{end}')
    assert res.stdout.split() == [
        "server",
        "output",
        "timeout",
        "bastion",
        "ca_fingerprint",
        "context",
    ]
    bad = labctl(tmp_path, "config", "list", "-o", "jsonpath={.key")
    assert bad.returncode == 2
    assert one_error(bad.stderr)[0].startswith("error: jsonpath '{.key': ")
