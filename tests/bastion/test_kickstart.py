"""Rendered kickstarts: pykickstart validation, LVM layout by role, and the %pre logic run
as a real ``sh`` against fake ``vgs``/``lvs``/``lsblk``/``curl`` printing recorded outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pykickstart.parser import KickstartParser
from pykickstart.version import F41, F42, F43, makeVersion

from lab.bastion.records import Inventory
from lab.bastion.templates import Templates
from lab.model import structure

MAC = "52:54:00:12:34:56"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@lab"
VERSIONS = [F41, F42, F43]


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates(base_url="http://10.9.0.1:8080", repo="http://mirror.test/fedora/42/os")


def install_ks(t: Templates, role: str, reprovision: bool, join: str | None = None) -> str:
    return t.install_ks(
        mac=MAC,
        token="cb-token",
        hostname="node1",
        role=role,
        disk="/dev/sda",
        ssh_keys=[KEY],
        reprovision=reprovision,
        join_token=join,
        labd_url="https://labd.lab:8443" if join else None,
    )


def parse(ks: str, version: int) -> object:
    handler = makeVersion(version)
    KickstartParser(handler, followIncludes=False).readKickstartFromString(ks)
    return handler


@pytest.mark.parametrize("version", VERSIONS)
def test_discover_ks_is_valid_and_touches_no_disk(templates: Templates, version: int) -> None:
    h = parse(templates.discover_ks(mac=MAC, token="disc"), version)
    assert not h.clearpart.type and not h.logvol.lvList and not h.partition.partitions  # type: ignore[attr-defined]
    [pre] = h.scripts  # type: ignore[attr-defined]
    assert "/api/discover" in pre.script and 'reboot", "-f"' in pre.script


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("role", ["worker", "infra"])
@pytest.mark.parametrize("join", [None, "jt-1"])
def test_fresh_install_ks_layout_by_role(
    templates: Templates, version: int, role: str, join: str | None
) -> None:
    h = parse(install_ks(templates, role, False, join), version)
    lvs = {lv.mountpoint: lv for lv in h.logvol.lvList}  # type: ignore[attr-defined]
    data = {"worker": "/var/lib/longhorn", "infra": "/var/lib/rancher"}
    assert set(lvs) == {"/", "/var", "/home", "/srv", data[role]}
    assert lvs[data[role]].name == data[role].rsplit("/", 1)[1] and lvs[data[role]].grow
    assert all(lv.vgname == "lab" and not lv.preexist for lv in lvs.values())
    assert not any("swap" in (p.mountpoint or "") for p in h.partition.partitions)  # type: ignore[attr-defined]
    assert h.clearpart.drives == ["/dev/sda"]  # type: ignore[attr-defined]
    assert h.sshkey.sshUserList[0].key == KEY  # type: ignore[attr-defined]
    assert "-zram-generator-defaults" in str(h.packages)  # type: ignore[attr-defined]
    pre, post = h.scripts  # type: ignore[attr-defined]
    assert pre.errorOnFail and post.errorOnFail
    assert "br_netfilter" in post.script and "overlay" in post.script
    assert "net.bridge.bridge-nf-call-iptables = 1" in post.script
    assert ("systemctl enable lab-agent.service" in post.script) == bool(join)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("role", ["worker", "infra"])
def test_reprovision_ks_is_valid_and_includes_the_pre_layout(
    templates: Templates, version: int, role: str, tmp_path: Path
) -> None:
    ks = install_ks(templates, role, True)
    h = parse(ks, version)
    assert not h.logvol.lvList and not h.clearpart.type  # type: ignore[attr-defined]
    assert "%include /tmp/lab-storage.ks" in ks
    # The storage commands %pre writes for a matching layout, put in place of the include:
    result = run_pre(ks, tmp_path, MATCHING[role], efi=True)
    assert result.returncode == 0, result.stderr
    full = ks.replace("%include /tmp/lab-storage.ks", result.storage)
    h = parse(full, version)
    lvs = {lv.mountpoint: lv for lv in h.logvol.lvList}  # type: ignore[attr-defined]
    keep = {"/home", "/srv", "/var/lib/longhorn" if role == "worker" else "/var/lib/rancher"}
    assert {m for m, lv in lvs.items() if lv.preexist and not lv.format} == keep
    assert {m for m, lv in lvs.items() if lv.preexist and lv.format} == {"/", "/var"}
    [vg] = h.volgroup.vgList  # type: ignore[attr-defined]
    assert vg.vgname == "lab" and vg.preexist and not vg.format
    parts = {p.mountpoint: p for p in h.partition.partitions}  # type: ignore[attr-defined]
    assert parts["/boot"].onPart == "sda2" and parts["/boot"].format
    assert parts["/boot/efi"].onPart == "sda1"


# --- %pre preservation logic, run for real --------------------------------------------------

LSBLK = (
    'NAME="/dev/sda" LABEL="" PARTTYPE=""\n'
    'NAME="/dev/sda1" LABEL="" PARTTYPE="c12a7328-f81f-11d2-ba4b-00a0c93ec93b"\n'
    'NAME="/dev/sda2" LABEL="labboot" PARTTYPE="0fc63daf-8483-4772-8e79-3d69d8477de4"\n'
    'NAME="/dev/sda3" LABEL="" PARTTYPE="e6d6d379-f507-44c2-a23c-238f2a3df928"\n'
)
BIOS_LSBLK = LSBLK.replace(
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "21686148-6449-6e6f-744e-656564454649"
)
MATCHING = {
    "worker": {"vgs": "  lab\n", "lvs": "  home\n  longhorn\n  root\n  srv\n  var\n"},
    "infra": {"vgs": "  lab\n", "lvs": "  home\n  rancher\n  root\n  srv\n  var\n"},
}


class PreResult:
    def __init__(self, done: subprocess.CompletedProcess[str], out: Path, calls: Path) -> None:
        self.returncode = done.returncode
        self.stderr = done.stderr
        self.storage = out.read_text() if out.exists() else ""
        self.progress = (
            [json.loads(line) for line in calls.read_text().splitlines() if line.strip()]
            if calls.exists()
            else []
        )


def pre_script(ks: str) -> str:
    body = ks.split("%pre --interpreter=/bin/sh --erroronfail --log=/tmp/lab-pre.log\n", 1)[1]
    return body.split("\n%end", 1)[0]


def run_pre(
    ks: str, tmp: Path, outputs: dict[str, str], *, efi: bool, lsblk: str = LSBLK
) -> PreResult:
    bin_dir, sysfs = tmp / "bin", tmp / "sys"
    bin_dir.mkdir(exist_ok=True)
    if efi:
        (sysfs / "firmware" / "efi").mkdir(parents=True, exist_ok=True)
    calls, out = tmp / "curl.calls", tmp / "storage.ks"
    fakes = {
        "vgs": outputs.get("vgs", ""),
        "lvs": outputs.get("lvs", ""),
        "lsblk": lsblk,
    }
    for name, text in fakes.items():
        (bin_dir / f"{name}.out").write_text(text)
        (bin_dir / name).write_text(f'#!/bin/sh\ncat "{bin_dir}/{name}.out"\n')
    # curl records the JSON of each progress callback (the word after --data).
    (bin_dir / "curl").write_text(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n"
        f'  if [ "$1" = --data ]; then printf "%s\\n" "$2" >> "{calls}"; fi\n'
        "  shift\ndone\n"
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LAB_STORAGE_KS": str(out),
        "LAB_SYSFS": str(sysfs),
        "LAB_NO_WATCH": "1",
    }
    done = subprocess.run(
        ["sh", "-c", pre_script(ks)], env=env, capture_output=True, text=True, timeout=30
    )
    return PreResult(done, out, calls)


@pytest.mark.parametrize("role", ["worker", "infra"])
def test_pre_keeps_data_volumes_of_a_matching_layout(
    templates: Templates, role: str, tmp_path: Path
) -> None:
    r = run_pre(
        install_ks(templates, role, True), tmp_path, MATCHING[role], efi=False, lsblk=BIOS_LSBLK
    )
    assert r.returncode == 0, r.stderr
    data = "longhorn" if role == "worker" else "rancher"
    mount = f"/var/lib/{data}"
    assert f"logvol {mount} --vgname=lab --name={data} --useexisting --noformat" in r.storage
    assert "logvol /home --vgname=lab --name=home --useexisting --noformat" in r.storage
    assert "logvol /srv --vgname=lab --name=srv --useexisting --noformat" in r.storage
    assert "logvol / --vgname=lab --name=root --useexisting --fstype=xfs" in r.storage
    assert "logvol /var --vgname=lab --name=var --useexisting --fstype=xfs" in r.storage
    assert "part biosboot --onpart=/dev/sda1 --fstype=biosboot" in r.storage
    assert "part /boot --onpart=/dev/sda2 --fstype=xfs" in r.storage
    assert [p["phase"] for p in r.progress] == ["pre", "pre"]
    assert r.progress[-1]["message"] == (f"keeping /home /srv {mount}; formatting /boot / /var")


def test_pre_aborts_on_a_missing_lv(templates: Templates, tmp_path: Path) -> None:
    outputs = {"vgs": "  lab\n", "lvs": "  home\n  longhorn\n  root\n  var\n"}
    r = run_pre(install_ks(templates, "worker", True), tmp_path, outputs, efi=True)
    assert r.returncode == 1
    assert r.storage == ""
    last = r.progress[-1]
    assert last["failed"] is True and last["phase"] == "pre"
    assert last["message"] == "layout mismatch: missing LV lab/srv for role worker"


def test_pre_aborts_on_the_other_roles_layout(templates: Templates, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r = run_pre(install_ks(templates, "infra", True), tmp_path / "a", MATCHING["worker"], efi=True)
    assert r.returncode == 1
    assert r.progress[-1]["message"] == "layout mismatch: missing LV lab/rancher for role infra"
    outputs = {"vgs": "  lab\n", "lvs": MATCHING["infra"]["lvs"] + "  longhorn\n"}
    r = run_pre(install_ks(templates, "infra", True), tmp_path / "b", outputs, efi=True)
    assert r.returncode == 1
    assert "found LV lab/longhorn, which role infra does not use" in r.progress[-1]["message"]


def test_pre_aborts_on_a_foreign_layout(templates: Templates, tmp_path: Path) -> None:
    # A stock Fedora install: VG "fedora" with root/home/swap.
    outputs = {"vgs": "  fedora\n", "lvs": "  home\n  root\n  swap\n"}
    r = run_pre(install_ks(templates, "worker", True), tmp_path, outputs, efi=True)
    assert r.returncode == 1
    assert r.progress[-1] == {
        "mac": MAC,
        "phase": "pre",
        "percent": 0,
        "message": "layout mismatch: volume group lab not found, refusing to reprovision",
        "failed": True,
    }


def test_fresh_pre_only_reports(templates: Templates, tmp_path: Path) -> None:
    r = run_pre(install_ks(templates, "worker", False), tmp_path, {}, efi=True)
    assert r.returncode == 0 and r.storage == ""
    assert r.progress == [
        {"mac": MAC, "phase": "pre", "percent": 0, "message": "installer started", "failed": False}
    ]


def test_discover_pre_collects_a_valid_inventory(templates: Templates, tmp_path: Path) -> None:
    """Run the discovery %pre (python) here, with dmidecode/curl/reboot faked."""
    ks = templates.discover_ks(mac=MAC, token="disc")
    script = ks.split("%pre --interpreter=/usr/bin/python3 --log=/tmp/lab-discover.log\n")[1]
    script = script.split("\n%end")[0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    posted = tmp_path / "posted.json"
    (bin_dir / "dmidecode").write_text('#!/bin/sh\necho "Fake $2"\n')
    (bin_dir / "curl").write_text(f'#!/bin/sh\ncat > "{posted}"\n')
    (bin_dir / "reboot").write_text(f'#!/bin/sh\ntouch "{tmp_path}/rebooted"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rebooted").exists()
    inv = structure(json.loads(posted.read_text()), Inventory)
    assert inv.mac == MAC
    assert inv.system.vendor == "Fake system-manufacturer"
    # The hardware identity an install's labd token is bound to.
    assert inv.system.serial == "Fake system-serial-number"
    assert inv.system.uuid == "Fake system-uuid"
    assert inv.memory_bytes > 0 and inv.cpu.threads > 0
    assert inv.firmware in ("bios", "uefi")
