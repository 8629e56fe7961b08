"""The redfish driver against sushy-tools' emulator (fake driver) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from lab.errors import Conflict, PermissionDenied, Unavailable
from lab.power import run_action
from lab.power.redfish import RedfishDriver
from tests.power.bmcs import PASSWORD, USER, Redfish, redfish_emulator, silent_tcp

pytest.importorskip("sushy")


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[Redfish]:
    with redfish_emulator(tmp_path / "redfish") as emulator:
        yield emulator


def driver(bmc: Redfish, password: str = PASSWORD) -> RedfishDriver:
    return RedfishDriver(bmc.url, username=USER, password=password, deadline=30)


async def reported(bmc: Redfish, power: str) -> None:
    """Wait until the emulator itself reports ``power`` (its fake machine takes 1-11 s)."""
    while (await trio.to_thread.run_sync(bmc.system))["PowerState"] != power:
        await trio.sleep(0.2)


async def test_status_on_off_cycle_follow_the_emulator(bmc: Redfish) -> None:
    drv = driver(bmc)
    with trio.fail_after(120):
        assert bmc.system()["PowerState"] == "Off"
        assert await drv.status() == "off"
        result = await run_action(drv, "on")
        assert result.driver == "redfish" and "On accepted" in result.answer
        await reported(bmc, "On")
        assert await drv.status() == "on"
        assert "ForceOff accepted" in await drv.off()
        await reported(bmc, "Off")
        assert await drv.status() == "off"
        # cycle of an off machine powers it on; of a running one, restarts it
        assert "On accepted" in await drv.cycle()
        await reported(bmc, "On")
        assert "ForceRestart accepted" in await drv.cycle()
        await reported(bmc, "On")
        assert "ForceRestart accepted" in await drv.reset()
        await reported(bmc, "On")


async def test_next_boot_pxe_then_cycle(bmc: Redfish) -> None:
    drv = driver(bmc)
    with trio.fail_after(120):
        assert bmc.system()["Boot"]["BootSourceOverrideTarget"] != "Pxe"  # type: ignore[index]
        result = await run_action(drv, "cycle", next_boot_pxe=True)
        assert result.next_boot == "pxe"
        assert "Pxe (Once)" in result.answer
        boot = bmc.system()["Boot"]
        assert boot["BootSourceOverrideTarget"] == "Pxe"  # type: ignore[index]
        await reported(bmc, "On")


async def test_wrong_password_is_one_line_and_changes_nothing(bmc: Redfish) -> None:
    with trio.fail_after(60):
        with pytest.raises(PermissionDenied) as err:
            await run_action(driver(bmc, "wrong"), "on", next_boot_pxe=True)
    assert "\n" not in err.value.message
    assert "refused the credentials (HTTP 401)" in err.value.message
    system = bmc.system()
    assert system["PowerState"] == "Off"
    assert system["Boot"]["BootSourceOverrideTarget"] != "Pxe"  # type: ignore[index]


async def test_unknown_system_and_refused_action(bmc: Redfish) -> None:
    from lab.errors import NotFound

    with trio.fail_after(60):
        drv = RedfishDriver(bmc.url, system="nope", username=USER, password=PASSWORD)
        with pytest.raises(NotFound):
            await drv.status()
        # a reset type the BMC does not list among its allowed values is refused up front
        drv = driver(bmc)
        with pytest.raises(Conflict, match="does not offer"):
            await drv._run("x", lambda s: drv._reset(s, ["PushPowerButton"], "x"))


async def test_hung_bmc_times_out_within_the_deadline() -> None:
    with silent_tcp() as port:
        drv = RedfishDriver(f"http://127.0.0.1:{port}", username=USER, password="x", deadline=1.5)
        start = trio.current_time()
        with trio.fail_after(30), pytest.raises(Unavailable) as err:
            await drv.status()
        elapsed = trio.current_time() - start
    assert elapsed < 1.5 + 2.0
    assert "1.5s" in err.value.message and "\n" not in err.value.message


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmc.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = tmp / "bmc.pem", tmp / "bmc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_is_verified_by_default_and_a_ca_file_opens_it(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path / "tls")
    with redfish_emulator(tmp_path / "redfish", tls=(cert, key)) as bmc:
        assert bmc.url.startswith("https://")
        with trio.fail_after(60):
            strict = RedfishDriver(bmc.url, username=USER, password=PASSWORD, deadline=20)
            with pytest.raises(Unavailable, match="TLS verification") as err:
                await strict.status()
            assert "\n" not in err.value.message
            pinned = RedfishDriver(
                bmc.url, username=USER, password=PASSWORD, ca_file=str(cert), deadline=20
            )
            assert await pinned.status() == "off"
            loose = RedfishDriver(
                bmc.url, username=USER, password=PASSWORD, verify=False, deadline=20
            )
            assert await loose.status() == "off"
