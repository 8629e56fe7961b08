"""Wire records of the bastion API, structured with labctl's strict converter.

Shape checks (types, unknown keys) come from the converter; value checks that protect the
templates (MAC, hostname, disk, keys) come from :mod:`lab.bastion.validate` in the handlers.
"""

from __future__ import annotations

from typing import Literal

from attrs import Factory, frozen

Firmware = Literal["bios", "uefi"]
Phase = Literal["pre", "partition", "packages", "post", "firstboot", "enrolled"]
PHASES: tuple[str, ...] = ("pre", "partition", "packages", "post", "firstboot", "enrolled")


@frozen(kw_only=True)
class SystemInfo:
    vendor: str = ""
    product: str = ""
    serial: str = ""
    # DMI system UUID (``dmidecode -s system-uuid``): with ``serial``, the hardware identity
    # a joined bastion binds the install's labd join token to.
    uuid: str = ""


@frozen(kw_only=True)
class CpuInfo:
    model: str = ""
    sockets: int = 1
    cores: int = 0
    threads: int = 0


@frozen(kw_only=True)
class DiskInfo:
    name: str
    model: str = ""
    size_bytes: int = 0
    serial: str = ""
    rotational: bool = False


@frozen(kw_only=True)
class NicInfo:
    name: str
    mac: str
    driver: str = ""
    speed_mbps: int | None = None
    link: bool = False


@frozen(kw_only=True)
class Inventory:
    """What a discovery boot reports; nothing in it is trusted to reach a template as-is."""

    mac: str
    system: SystemInfo = Factory(SystemInfo)
    firmware: Firmware
    cpu: CpuInfo = Factory(CpuInfo)
    memory_bytes: int = 0
    disks: list[DiskInfo] = Factory(list)
    nics: list[NicInfo] = Factory(list)


@frozen(kw_only=True)
class InstallRequest:
    mac: str
    hostname: str
    role: str
    disk: str = "/dev/sda"
    ssh_keys: list[str] = Factory(list)
    local_boot: str = "exit"


@frozen(kw_only=True)
class ReprovisionRequest:
    mac: str
    dry_run: bool = False


@frozen(kw_only=True)
class ProgressReport:
    mac: str
    phase: Phase
    percent: int = 0
    message: str = ""
    failed: bool = False


@frozen(kw_only=True)
class EnrolledReport:
    mac: str | None = None
    hostname: str | None = None
