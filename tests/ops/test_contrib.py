"""contrib/: the packaging, container and compose files parse and point at real files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
# Made by the package build (docs/operations.md), not kept in the repository.
GENERATED = {"build/wheelhouse/"}
DNSMASQ = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_nfpm_contents_exist() -> None:
    spec = load(CONTRIB / "nfpm" / "nfpm.yaml")
    assert spec["name"] == "labctl"
    sources = []
    for entry in spec["contents"]:
        kind = entry.get("type", "file")
        if kind in ("dir", "symlink"):
            continue
        if entry["src"] in GENERATED:
            continue
        sources.append(entry["src"])
        assert (ROOT / entry["src"]).is_file(), entry["src"]
    for unit in ("labd", "lab-bastion", "lab-agent"):
        assert f"units/{unit}.service" in sources
    for script in spec["scripts"].values():
        path = ROOT / script
        assert path.is_file(), script
        assert os.access(path, os.X_OK), f"{script} is not executable"
    # Every command on PATH points into the virtualenv the postinstall script builds.
    links = {e["dst"]: e["src"] for e in spec["contents"] if e.get("type") == "symlink"}
    for program in ("labctl", "labd", "lab-bastion", "lab-agent"):
        assert links[f"/usr/bin/{program}"] == f"/opt/labctl/bin/{program}"


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_nfpm_scripts_are_valid_sh() -> None:
    for script in sorted((CONTRIB / "nfpm").glob("*.sh")):
        proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"


def test_compose_services() -> None:
    compose = load(CONTRIB / "compose" / "compose.yaml")
    services = compose["services"]
    assert {"cockroach", "labd-1", "labd-2", "bastion", "agent-1", "agent-2"} <= set(services)
    for name in ("labd-1", "labd-2"):
        env = services[name]["environment"]
        assert env["LABD_DATABASE_URL"].startswith("postgresql://")
        assert "@cockroach:26257/" in env["LABD_DATABASE_URL"]
    for name in ("agent-1", "agent-2"):
        assert services[name]["environment"]["AGENT_NAME"] == name
    # Named volumes are declared; build contexts and Containerfile targets exist.
    declared = set(compose["volumes"])
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", containerfile(), flags=re.MULTILINE))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in declared, f"{name}: {volume}"
        build = service.get("build")
        if build is not None:
            context = (CONTRIB / "compose" / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()
            assert build["target"] in stages
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"


def containerfile() -> str:
    return (CONTRIB / "container" / "Containerfile").read_text()


def test_containerfile_copies_existing_paths_and_has_entrypoints() -> None:
    text = containerfile()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    entrypoints = re.findall(r'^ENTRYPOINT \["([^"]+)"\]', text, flags=re.MULTILINE)
    assert entrypoints == ["/opt/labctl/bin/lab-bastion", "/opt/labctl/bin/labd"]


@pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq not installed")
@pytest.mark.parametrize("name", ["proxy.conf", "dhcp.conf"])
def test_dnsmasq_examples_pass_its_syntax_check(tmp_path: Path, name: str) -> None:
    # --test checks the syntax; the interface of the example need not exist here.
    conf = tmp_path / name
    conf.write_text((CONTRIB / "dnsmasq" / name).read_text())
    assert DNSMASQ is not None
    proc = subprocess.run(
        [DNSMASQ, "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert "syntax check OK" in proc.stderr


def test_proxy_example_carries_the_server_address_for_ipxe() -> None:
    text = (CONTRIB / "dnsmasq" / "proxy.conf").read_text()
    boot = [line for line in text.splitlines() if line.startswith("dhcp-boot=tag:ipxe,")]
    assert len(boot) == 1
    # Without ",,<server-ip>" iPXE ignores a proxyDHCP answer.
    assert re.search(r",,\d+\.\d+\.\d+\.\d+$", boot[0])
