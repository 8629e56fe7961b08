"""/dispatch over real HTTP: the right iPXE script for every state and every MAC spelling."""

from __future__ import annotations

import pytest
import trio

from tests.bastion.conftest import INVENTORY, Running
from tests.bastion.test_validate import BAD_MACS, SPELLINGS

MAC = "52:54:00:ab:cd:ef"


async def test_unknown_mac_gets_the_discovery_script_in_every_spelling(bastion: Running) -> None:
    with trio.fail_after(10):
        for raw in SPELLINGS:
            r = await bastion.client.get("/dispatch", params={"mac": raw})
            assert r.status_code == 200, raw
            assert r.text.startswith("#!ipxe\n")
            assert f"/kickstart/discover.ks?mac={MAC}&token=" in r.text
            assert "inst.repo=http://mirror.test/fedora/42/os" in r.text
    # Dispatch alone records nothing: machines appear on /api/discover.
    listing = await bastion.client.get("/api/machines", headers=bastion.admin)
    assert listing.json()["items"] == []


async def test_url_encoded_mac_as_ipxe_sends_it(bastion: Running) -> None:
    # iPXE expands ${net0/mac} URL-encoded into the query string itself.
    r = await bastion.client.get(f"{bastion.url}/dispatch?mac=52%3A54%3A00%3Aab%3Acd%3Aef")
    assert f"mac={MAC}&" in r.text


@pytest.mark.parametrize("raw", [m for m in BAD_MACS if m])
async def test_bad_mac_is_400_with_envelope(bastion: Running, raw: str) -> None:
    r = await bastion.client.get("/dispatch", params={"mac": raw})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid"


async def test_missing_mac_is_400(bastion: Running) -> None:
    r = await bastion.client.get("/dispatch")
    assert r.status_code == 400
    assert r.json()["error"]["details"]["fields"] == ["mac"]


async def _state_scripts(bastion: Running, local_boot: str) -> dict[str, str]:
    """Walk one machine through every state, recording the dispatch script of each."""
    c = bastion.client
    seen: dict[str, str] = {}
    token = await bastion.discovery_token()
    r = await c.post(
        "/api/discover",
        json={**INVENTORY, "mac": MAC},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    seen["discovered"] = (await c.get("/dispatch", params={"mac": MAC})).text
    assert (await bastion.install(MAC, local_boot=local_boot)).status_code == 200
    script, cb = await bastion.dispatch_token(MAC)  # queued -> installing
    seen["queued"] = script
    # Still before "partition": the install is served again, with a new callback token.
    seen["installing-pre"], cb = await bastion.dispatch_token(MAC.upper())
    assert (await bastion.progress(cb, mac=MAC, phase="packages", percent=30)).status_code == 200
    seen["installing-packages"] = (await c.get("/dispatch", params={"mac": MAC})).text
    assert (await bastion.progress(cb, mac=MAC, phase="post", percent=100)).status_code == 200
    seen["installed"] = (await c.get("/dispatch", params={"mac": MAC})).text
    r = await c.post("/api/enrolled", json={"mac": MAC}, headers=bastion.admin)
    assert r.json()["state"] == "enrolled"
    seen["enrolled"] = (await c.get("/dispatch", params={"mac": "5254.00ab.cdef"})).text
    r = await c.post("/api/reprovision", json={"mac": MAC}, headers=bastion.admin)
    assert r.status_code == 200
    script, cb = await bastion.dispatch_token(MAC)
    seen["reprovision"] = script
    r = await bastion.progress(
        cb,
        mac=MAC,
        phase="pre",
        percent=0,
        message="layout mismatch: missing LV lab/srv",
        failed=True,
    )
    assert r.json()["state"] == "failed"
    seen["failed"] = (await c.get("/dispatch", params={"mac": MAC})).text
    return seen


async def test_every_state_gets_its_script(bastion: Running) -> None:
    with trio.fail_after(20):
        s = await _state_scripts(bastion, "exit")
    assert "discover.ks" not in s["discovered"] and s["discovered"].rstrip().endswith("exit")
    for key in ("queued", "installing-pre", "reprovision"):
        assert f"/kickstart/install.ks?mac={MAC}&token=" in s[key], key
    assert "node1 (worker)" in s["queued"]
    assert "reprovision, data volumes kept" in s["reprovision"]
    # After partitioning started, another PXE boot must not start the install again.
    for key in ("installing-packages", "installed", "enrolled"):
        assert "install.ks" not in s[key] and "discover.ks" not in s[key], key
        assert s[key].rstrip().endswith("exit"), key
    assert "FAILED in phase pre" in s["failed"]
    assert "layout mismatch: missing LV lab/srv" in s["failed"]
    assert s["failed"].rstrip().endswith("exit")


async def test_sanboot_local_boot_method(bastion: Running) -> None:
    with trio.fail_after(20):
        s = await _state_scripts(bastion, "sanboot")
    for key in ("installed", "enrolled", "failed"):
        assert "sanboot --no-describe --drive 0x80" in s[key]


async def test_each_install_dispatch_rotates_the_callback_token(bastion: Running) -> None:
    await bastion.install(MAC)
    _, first = await bastion.dispatch_token(MAC)
    _, second = await bastion.dispatch_token(MAC)  # an interrupted boot before "partition"
    assert first != second
    assert (await bastion.progress(first, mac=MAC, phase="pre")).status_code == 401
    assert (await bastion.progress(second, mac=MAC, phase="pre")).status_code == 200
