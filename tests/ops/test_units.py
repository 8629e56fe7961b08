"""units/*.service pass ``systemd-analyze verify`` and keep their sandbox.

``verify`` insists that ExecStart binaries exist, and ours live in /opt/labctl/bin only on an
installed machine. The test verifies copies whose ``/opt/labctl/bin/`` prefix points at stub
executables in a temporary directory; nothing else in the units is changed.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "units"
NAMES = ("labd.service", "lab-bastion.service", "lab-agent.service")
PREFIX = "/opt/labctl/bin/"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def service_section(name: str) -> dict[str, list[str]]:
    """``[Service]`` keys with every value (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def rewritten_units(tmp_path: Path) -> list[Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for program in ("labd", "lab-bastion", "lab-agent"):
        stub = bindir / program
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    out = []
    for name in NAMES:
        text = (UNITS / name).read_text()
        assert PREFIX in text, f"{name}: ExecStart must use {PREFIX}"
        copy = tmp_path / name
        copy.write_text(text.replace(PREFIX, f"{bindir}/"))
        out.append(copy)
    return out


def test_units_parse_and_name_the_venv() -> None:
    for name in NAMES:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(UNITS / name)
        assert {"Unit", "Service", "Install"} <= set(parser.sections())
        service = service_section(name)
        assert service["ExecStart"][0].startswith(PREFIX)
        assert service["Type"] == ["notify"]
        assert service["NotifyAccess"] == ["main"]
        assert service["WatchdogSec"] == ["30"]
        assert service["Restart"] == ["on-failure"]


def test_daemon_sandboxes() -> None:
    labd = service_section("labd.service")
    bastion = service_section("lab-bastion.service")
    for service in (labd, bastion):
        assert service["User"] == ["lab"]
        for key in (
            "NoNewPrivileges",
            "ProtectHome",
            "PrivateTmp",
            "ProtectKernelTunables",
            "ProtectControlGroups",
        ):
            assert service[key] == ["yes"], key
        assert service["ProtectSystem"] == ["strict"]
        assert "StateDirectory" in service
    assert labd["CapabilityBoundingSet"] == [""]
    assert labd["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    caps = {"CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(bastion["CapabilityBoundingSet"][0].split()) == caps
    assert set(bastion["AmbientCapabilities"][0].split()) == caps
    # The agent runs operators' commands as root: no sandbox that would apply to them.
    agent = service_section("lab-agent.service")
    assert agent["User"] == ["root"]
    assert "CapabilityBoundingSet" not in agent


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    assert ANALYZE is not None
    units = rewritten_units(tmp_path)
    proc = subprocess.run(
        [ANALYZE, "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and bad values too; it only warns on stderr.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    assert proc.stdout.strip() == "", proc.stdout


@needs_analyze
@pytest.mark.parametrize(("name", "limit"), [("labd.service", 2.0), ("lab-bastion.service", 3.0)])
def test_exposure_stays_low(tmp_path: Path, name: str, limit: float) -> None:
    assert ANALYZE is not None
    unit = {p.name: p for p in rewritten_units(tmp_path)}[name]
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in proc.stderr or "unrecognized option" in proc.stderr:
        pytest.skip("this systemd-analyze has no offline security analysis")
    last = [line for line in proc.stdout.splitlines() if "Overall exposure level" in line]
    assert last, proc.stdout + proc.stderr
    score = float(last[-1].split(":")[1].split()[0])
    assert score <= limit, last[-1]
