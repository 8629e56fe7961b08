"""The ipmi driver against pyghmi's BMC simulator, cross-checked with ipmitool (lanplus)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import trio

from lab.errors import Conflict, PermissionDenied, Unavailable
from lab.power import run_action
from lab.power.ipmi import IpmiDriver
from tests.power.bmcs import PASSWORD, USER, Ipmi, bmc_said, ipmi_simulator, silent_udp

pytest.importorskip("pyghmi")
pytestmark = pytest.mark.skipif(shutil.which("ipmitool") is None, reason="needs ipmitool")


@pytest.fixture
def bmc() -> Iterator[Ipmi]:
    with ipmi_simulator() as simulator:
        yield simulator


def driver(bmc: Ipmi, password: str = PASSWORD) -> IpmiDriver:
    return IpmiDriver("127.0.0.1", port=bmc.port, username=USER, password=password, deadline=30)


async def ipmitool(bmc: Ipmi, *args: str, password: str = PASSWORD) -> str:
    done = await trio.run_process(
        bmc.ipmitool(*args, password=password),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return (done.stdout + done.stderr).decode()


async def test_status_on_off_cycle_match_ipmitool(bmc: Ipmi) -> None:
    drv = driver(bmc)
    with trio.fail_after(120):
        assert await drv.status() == "off"
        assert "Chassis Power is off" in await ipmitool(bmc, "power", "status")
        result = await run_action(drv, "on")
        assert result.power == "on" and "chassis power on" in result.answer
        assert "Chassis Power is on" in await ipmitool(bmc, "power", "status")
        await drv.off()
        assert "Chassis Power is off" in await ipmitool(bmc, "power", "status")
        # cycle of an off machine powers it on; of a running one, power-cycles it
        await drv.cycle()
        assert "Chassis Power is on" in await ipmitool(bmc, "power", "status")
        await drv.cycle()
        await drv.reset()
        assert "Chassis Power is on" in await ipmitool(bmc, "power", "status")
        await ipmitool(bmc, "power", "off")
        assert await drv.status() == "off"
        # a reset of an off chassis: the BMC says "not in present state"
        with pytest.raises(Conflict, match="present state") as err:
            await drv.reset()
        assert "\n" not in err.value.message
    assert bmc_said(bmc) == [
        "power on", "power off", "power on", "power cycle", "power reset", "power off",
    ]  # fmt: skip


async def test_next_boot_pxe_then_cycle(bmc: Ipmi) -> None:
    with trio.fail_after(120):
        before = await ipmitool(bmc, "chassis", "bootparam", "get", "5")
        assert "Force PXE" not in before
        result = await run_action(driver(bmc), "cycle", next_boot_pxe=True)
        assert result.next_boot == "pxe" and result.power == "on"
        after = await ipmitool(bmc, "chassis", "bootparam", "get", "5")
        assert "Force PXE" in after, after
    assert bmc_said(bmc) == ["bootdev network", "power on"]


async def test_wrong_password_is_one_line_and_changes_nothing(bmc: Ipmi) -> None:
    with trio.fail_after(60):
        with pytest.raises(PermissionDenied) as err:
            await run_action(driver(bmc, "wrong"), "on", next_boot_pxe=True)
        assert "\n" not in err.value.message
        assert "refused the credentials" in err.value.message
        assert "Chassis Power is off" in await ipmitool(bmc, "power", "status")
    assert bmc_said(bmc) == []


async def test_silent_bmc_times_out_within_the_deadline() -> None:
    with silent_udp() as port:
        drv = IpmiDriver("127.0.0.1", port=port, username=USER, password="x", deadline=1.5)
        start = trio.current_time()
        with trio.fail_after(30), pytest.raises(Unavailable) as err:
            await drv.status()
        elapsed = trio.current_time() - start
    assert elapsed < 1.5 + 2.0
    assert "1.5s" in err.value.message and "\n" not in err.value.message
