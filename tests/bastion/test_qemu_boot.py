"""Real firmware PXE boots in full DHCP mode: QEMU VMs reach the bastion's /dispatch.

BIOS runs QEMU's e1000 iPXE ROM; UEFI runs OVMF's own PXE on a virtio NIC without option ROM,
so the chain firmware PXE -> TFTP ipxe.efi -> iPXE -> HTTP /dispatch is exercised. Both VMs
boot at the same time on one LAN. Nothing on this LAN advertises IPv6, as on an isolated
network: iPXE then waits ~13 s for a router before it fetches /dispatch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bastion.conftest import Running
from tests.bastion.qemu import bastion_process, boot_all, make_lan, qemu_missing
from tests.bastion.test_dnsmasq import Net
from tests.bastion.test_dnsmasq import net as net  # fixture: the namespaces and veth pair

LIMIT = 90.0


@pytest.fixture
def vm_net(net: Net) -> Iterator[Net]:
    reason = qemu_missing()
    if reason:
        pytest.skip(reason)
    yield net


async def test_dispatch_is_logged_with_the_normalised_mac(
    bastion: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lab.bastion")
    await bastion.client.get("/dispatch", params={"mac": "52-54-00-AB-CD-EF"})
    assert "dispatch 52:54:00:ab:cd:ef (unknown)" in caplog.messages


@pytest.mark.slow
@pytest.mark.netns
async def test_bios_and_uefi_vms_pxe_boot_to_dispatch_in_dhcp_mode(
    vm_net: Net, tmp_path: Path
) -> None:
    lan = make_lan(vm_net)
    async with bastion_process(lan, tmp_path / "data", mode="dhcp") as log:
        boots = await boot_all(lan, log, ["bios", "uefi"], workdir=tmp_path, limit=LIMIT)
    for boot in boots.values():
        print(f"dhcp {boot.firmware}: /dispatch {boot.seconds:.1f} s after the VM started")
    # Addresses came from the bastion; only the UEFI firmware needed ipxe.efi over TFTP.
    for boot in boots.values():
        assert any("DHCPACK(" in line and boot.mac in line for line in log.lines)
    assert any("ipxe.efi to" in line for line in log.lines)
