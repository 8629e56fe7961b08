""".gitea/workflows/ci.yaml: valid against the GitHub workflow schema, and its steps are the
developer's own commands (nox sessions, .ci/run)."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".gitea" / "workflows" / "ci.yaml"
HAS_CHECKER = importlib.util.find_spec("check_jsonschema") is not None


def workflow() -> dict[str, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); keep it a string.
    data = yaml.load(WORKFLOW.read_text(), Loader=yaml.BaseLoader)
    assert isinstance(data, dict)
    return data


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not HAS_CHECKER, reason="check-jsonschema is not installed (.[test])")
def test_workflow_validates_against_the_github_schema(tmp_path: Path) -> None:
    done = validate(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check is real: a job without runs-on, or a misspelt key, is refused.
    broken = tmp_path / "ci.yaml"
    broken.write_text(WORKFLOW.read_text().replace("timeout-minutes: 15", "timeout-minuts: 15"))
    refused = validate(broken)
    assert refused.returncode == 1
    assert "timeout-minuts" in refused.stdout


def nox_sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if ast.unparse(target) == "nox.session":
                    names.add(node.name)
    return names


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def test_triggers_and_jobs() -> None:
    data = workflow()
    assert set(data["on"]) == {"push", "pull_request"}
    assert data["on"]["push"]["tags"] == ["v*"]
    jobs = data["jobs"]
    assert {"lint", "typecheck", "test", "release", "images"} <= set(jobs)
    # Every push and pull request runs the checks; only a v* tag releases, after all of them.
    for name in ("lint", "typecheck", "test"):
        assert "if" not in jobs[name]
    for name in ("release", "images"):
        assert jobs[name]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert set(jobs["release"]["needs"]) == {"lint", "typecheck", "test"}
    assert jobs["images"]["needs"] == ["release"]


def test_checks_are_the_developers_commands() -> None:
    jobs = workflow()["jobs"]
    assert "nox -s lint" in runs(jobs["lint"])
    assert "nox -s typecheck" in runs(jobs["typecheck"])
    # The README's test command through .ci/run, as root with what netns and QEMU need.
    assert "bash .ci/run" in runs(jobs["test"])
    assert re.search(r"(?m)^nox$", (ROOT / ".ci" / "run").read_text())
    assert "pip install nox && nox" in (ROOT / "README.md").read_text()
    assert "--privileged" in jobs["test"]["container"]["options"]
    assert runs(jobs["release"])[2:] == [
        'nox -s build -- "$GITHUB_REF_NAME"',
        "nox -s packages",
        "nox -s checksums",
        "bash contrib/release/publish.sh",
    ]


def test_every_nox_call_names_a_real_session() -> None:
    sessions = nox_sessions()
    assert {"lint", "typecheck", "build", "packages", "checksums", "zipapp"} <= sessions
    called = []
    for job in workflow()["jobs"].values():
        for command in runs(job):
            for match in re.finditer(r"\bnox -s (\S+)", command):
                called.append(match.group(1))
    assert called
    assert set(called) <= sessions


def test_scripts_and_paths_exist() -> None:
    for job in workflow()["jobs"].values():
        for command in runs(job):
            for path in re.findall(r"\b(?:bash|sh|python) ((?:\.ci|contrib)/\S+)", command):
                assert (ROOT / path).is_file(), path
        if "container" in job:
            # A container without node cannot run actions/checkout: node comes first.
            first = job["steps"][0]
            assert "nodejs" in first["run"]
    if shutil.which("bash"):
        done = subprocess.run(["bash", "-n", str(ROOT / "contrib/release/publish.sh")])
        assert done.returncode == 0


def test_images_are_the_containerfile_targets_with_the_tag_version() -> None:
    containerfile = (ROOT / "contrib" / "container" / "Containerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", containerfile, flags=re.MULTILINE))
    assert "ARG LABCTL_VERSION" in containerfile
    builds = [
        s["with"]
        for s in workflow()["jobs"]["images"]["steps"]
        if "build-push" in s.get("uses", "")
    ]
    assert {b["target"] for b in builds} == {"labd", "bastion"} <= stages
    for build in builds:
        assert build["file"] == "contrib/container/Containerfile"
        assert (ROOT / build["file"]).is_file()
        assert build["build-args"] == "LABCTL_VERSION=${{ steps.meta.outputs.version }}"
        assert build["push"] == "true"


def test_secrets_by_name_only_and_documented() -> None:
    lines = WORKFLOW.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{\{\s*secrets\.([A-Z_]+)\s*\}\}", text))
    assert used == {"RELEASE_USER", "RELEASE_TOKEN"}
    # No other way into secrets (e.g. toJSON(secrets)), and nothing that looks like a token.
    assert text.count("secrets.") == len(re.findall(r"\$\{\{\s*secrets\.[A-Z_]+\s*\}\}", text))
    assert not re.search(r"(?i)(password|token)\s*:\s*[\"']?[A-Za-z0-9]{16,}", text)
    docs = (ROOT / "docs" / "development.md").read_text()
    for name in used:
        assert f"`{name}`" in docs, name
