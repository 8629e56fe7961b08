"""labctl modules list|show|lint|package as a user runs them (the real program, no labd)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli.test_config_cmd import labctl

ROOT = Path(__file__).resolve().parents[2]


def test_list_and_show_the_builtins(tmp_path: Path) -> None:
    listed = labctl(tmp_path, "modules", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)] == ["cockroachdb", "lab-bastion", "labd"]
    shown = labctl(tmp_path, "modules", "show", "cockroachdb@1.0.0")
    assert shown.returncode == 0, shown.stderr
    doc = yaml.safe_load(shown.stdout)
    assert doc["name"] == "cockroachdb"
    assert "templates/statefulset.yaml" in doc["templates"]
    assert doc["parameters"]["properties"]["tls"]["properties"]["node_key"]["secret"] is True
    missing = labctl(tmp_path, "modules", "show", "cockroachdb@9.9.9")
    assert missing.returncode == 4
    assert missing.stderr.startswith("error: module cockroachdb has no version 9.9.9")


def test_lint_names_the_bad_value_and_package_then_show_the_tarball(tmp_path: Path) -> None:
    labd = str(ROOT / "modules" / "labd")
    bad = labctl(
        tmp_path, "modules", "lint", labd, "--set", "replicas=0", "--set", "ca_passphrase=x"
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "error: values.ca_passphrase: the (secret) value does not satisfy minLength 16"
    )
    good = labctl(tmp_path, "modules", "lint", labd, "--set", "ca_passphrase=" + "p" * 20)
    assert good.returncode == 0, good.stderr
    assert "apps/v1/Deployment/default/labd" in good.stdout
    assert good.stdout.splitlines()[-1].startswith("ok: labd@1.0.0, 7 objects")
    packed = labctl(tmp_path, "modules", "package", labd, "-d", str(tmp_path / "dist"))
    assert packed.returncode == 0, packed.stderr
    archive, digest_line = packed.stdout.splitlines()
    assert archive.endswith("labd-1.0.0.tar.gz")
    shown = labctl(tmp_path, "modules", "show", archive, "-o", "json")
    assert json.loads(shown.stdout)["sha256"] == digest_line.split()[1]
    tampered = labctl(tmp_path, "modules", "show", archive, "--sha256", "1" * 64)
    assert tampered.returncode == 2
    assert "the archive was changed" in tampered.stderr
