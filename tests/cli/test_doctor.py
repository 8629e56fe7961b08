"""labctl doctor as a process against a harness labd and bastion, as a logged-in admin."""

from __future__ import annotations

from pathlib import Path

import trio

from lab import pki
from tests.bastion.conftest import start_bastion
from tests.bastion_join.test_join import joined
from tests.labd.harness import running_labd
from tests.servers.cli import labctl, login_env


async def test_all_ok_then_a_wrong_ca_fingerprint_fails(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.admin()
            fingerprint = pki.load_ca_bundle(labd.ca_pem())[0].fingerprint()
            async for bastion in start_bastion(nursery, tmp_path / "pxe"):
                env = login_env(
                    labd,
                    admin,
                    tmp_path / "home",
                    LABCTL_CA_FINGERPRINT=fingerprint,
                    LABCTL_BASTION=bastion.url,
                )
                good = await labctl(env, "doctor")
                bad = await labctl(env | {"LABCTL_CA_FINGERPRINT": "SHA256:" + "0" * 64}, "doctor")
                nursery.cancel_scope.cancel()

    lines = good.stdout.splitlines()
    assert good.returncode == 0, good.stdout + good.stderr
    assert not [line for line in lines if line.startswith("[FAIL]")], good.stdout
    starts = [line.split("] ", 1)[1].split(" ", 1)[0] for line in lines]
    assert starts[:6] == ["config", "labd", "certificate", "clock", "CA", "bastion"], lines
    assert f"[ok] labd at {labd.url} reachable and healthy" in lines
    assert any(line.startswith("[ok] certificate ") and "days" in line for line in lines), lines
    assert any(line.startswith("[ok] clock skew against labd") for line in lines)
    assert f"[ok] CA {fingerprint} matches {tmp_path / 'home' / 'ca.pem'} and labd's /api/ca" in (
        lines
    )
    assert f"[ok] bastion at {bastion.url} reachable and healthy" in lines
    assert any(line.startswith("[info] dnsmasq") for line in lines)
    assert sum("port " in line for line in lines) == 2

    assert bad.returncode == 1, bad.stdout
    ca_line = next(line for line in bad.stdout.splitlines() if " CA " in f" {line}")
    assert ca_line.startswith("[FAIL] CA SHA256:000"), bad.stdout
    assert "(hint: labctl login again with --ca-fingerprint" in ca_line
    assert "[ok] labd at" in bad.stdout


async def test_a_joined_bastions_https_operator_url_is_checked_against_labds_ca(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        async with joined(tmp_path) as (labd, admin, bastion):
            assert bastion.operator_url is not None
            env = login_env(labd, admin, tmp_path / "home", LABCTL_BASTION=bastion.operator_url)
            done = await labctl(env, "doctor")
    assert (
        f"[ok] bastion at {bastion.operator_url} reachable and healthy" in done.stdout.splitlines()
    )
