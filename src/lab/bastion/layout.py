"""The disk layout of an installed machine, by role, and what a reprovision keeps.

One volume group ``lab`` on the install disk. ``/``, ``/var`` and ``/boot`` hold the OS and are
formatted by every install; ``/home``, ``/srv`` and the role's data volume hold the user's data
and survive a reprovision untouched (``logvol … --useexisting --noformat``).
"""

from __future__ import annotations

from attrs import frozen

VG_NAME = "lab"


@frozen(kw_only=True)
class LogicalVolume:
    name: str
    mountpoint: str
    size_mib: int
    grow: bool = False
    keep: bool = False
    """Kept (not formatted) on reprovision."""


_COMMON = (
    LogicalVolume(name="root", mountpoint="/", size_mib=20480),
    LogicalVolume(name="var", mountpoint="/var", size_mib=20480),
    LogicalVolume(name="home", mountpoint="/home", size_mib=10240, keep=True),
    LogicalVolume(name="srv", mountpoint="/srv", size_mib=10240, keep=True),
)

ROLE_DATA_LV = {
    "worker": LogicalVolume(
        name="longhorn", mountpoint="/var/lib/longhorn", size_mib=1, grow=True, keep=True
    ),
    "infra": LogicalVolume(
        name="rancher", mountpoint="/var/lib/rancher", size_mib=1, grow=True, keep=True
    ),
}


def layout_for(role: str) -> tuple[LogicalVolume, ...]:
    """The logical volumes of ``role``, the growing data volume last."""
    return (*_COMMON, ROLE_DATA_LV[role])


@frozen(kw_only=True)
class ReprovisionPlan:
    role: str
    keep: tuple[str, ...]
    format: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"role": self.role, "keep": list(self.keep), "format": list(self.format)}


def reprovision_plan(role: str) -> ReprovisionPlan:
    """What a reprovision of a ``role`` machine formats and keeps (mount points)."""
    lvs = layout_for(role)
    return ReprovisionPlan(
        role=role,
        keep=tuple(lv.mountpoint for lv in lvs if lv.keep),
        format=("/boot", *(lv.mountpoint for lv in lvs if not lv.keep)),
    )
