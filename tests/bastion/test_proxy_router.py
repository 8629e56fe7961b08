"""proxyDHCP beside a home router: QEMU VMs get their address from a plain DHCP server (a
second dnsmasq on the LAN bridge) and their boot answers from the bastion.

The router also advertises IPv6 like most home routers; iPXE then starts HTTP at once instead
of waiting for one (see test_qemu_boot).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bastion.qemu import bastion_process, boot_all, make_lan, qemu_missing, router_process
from tests.bastion.test_dnsmasq import Net
from tests.bastion.test_dnsmasq import net as net  # fixture: the namespaces and veth pair

LIMIT = 90.0


@pytest.fixture
def vm_net(net: Net) -> Iterator[Net]:
    reason = qemu_missing()
    if reason:
        pytest.skip(reason)
    yield net


@pytest.mark.slow
@pytest.mark.netns
async def test_bios_and_uefi_vms_pxe_boot_to_dispatch_beside_a_home_router(
    vm_net: Net, tmp_path: Path
) -> None:
    prefix = vm_net.network.rsplit(".", 1)[0]
    lan = make_lan(vm_net, router_ip=f"{prefix}.254")
    async with (
        router_process(lan, tmp_path / "router") as router,
        bastion_process(lan, tmp_path / "data", mode="proxy") as log,
    ):
        boots = await boot_all(lan, log, ["bios", "uefi"], workdir=tmp_path, limit=LIMIT)
    for boot in boots.values():
        print(f"proxy {boot.firmware}: /dispatch {boot.seconds:.1f} s after the VM started")
    for boot in boots.values():
        # The address came from the router; the bastion only answered PXE.
        assert any(f"DHCPACK({lan.bridge})" in line and boot.mac in line for line in router.lines)
        assert any("proxy" in line and boot.mac in line for line in log.lines)
    assert not any("DHCPOFFER(" in line or "DHCPACK(" in line for line in log.lines)
    # UEFI firmware got ipxe.efi in the port-4011 step (the first proxy answer has only the
    # PXE menu) and fetched it over TFTP.
    assert any("bootfile name: ipxe.efi" in line for line in log.lines)
    assert any("ipxe.efi to" in line for line in log.lines)
