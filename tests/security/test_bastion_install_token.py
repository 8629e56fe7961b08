"""The labd token inside an install kickstart: bound to the machine, one-time, short-lived,
and revoked at labd as soon as that machine's install is no longer in progress.

A LAN attacker can always read ``/dispatch?mac=<queued MAC>`` → callback token → ``install.ks``
(PXE has no secret to check). What the labd token in it may then do is what these tests pin.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

from lab import pki
from tests.bastion.conftest import INVENTORY, Running
from tests.bastion_join.test_join import bastion_creds, join_token_of, joined
from tests.labd.harness import Credentials, RunningLabd

MAC = "52:54:00:aa:00:01"
UUID = "4C4C4544-0042-3510-8052-B4C04F4E4E31"
SERIAL = "CZJ12345XY"


async def discover(bastion: Running, mac: str) -> None:
    inventory = copy.deepcopy(INVENTORY)
    inventory["mac"] = mac
    inventory["system"].update(uuid=UUID, serial=SERIAL)
    token = await bastion.discovery_token()
    resp = await bastion.client.post(
        "/api/discover", json=inventory, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 200, resp.text


async def install_ks(bastion: Running, mac: str) -> tuple[str, str]:
    """Serve the install script as the LAN attacker would fetch it: (script, callback)."""
    _, callback = await bastion.dispatch_token(mac)
    resp = await bastion.client.get("/kickstart/install.ks", params={"mac": mac, "token": callback})
    assert resp.status_code == 200, resp.text
    return resp.text, callback


async def tokens_by_id(labd: RunningLabd, admin: Credentials) -> dict[str, dict[str, Any]]:
    async with labd.client(admin) as http:
        return {t["id"]: t for t in (await http.get("/api/tokens")).json()["items"]}


def token_id(kickstart: str) -> str:
    return join_token_of(kickstart).split(".", 1)[0]


async def test_the_kickstart_token_is_bound_one_time_and_short_lived(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with joined(tmp_path) as (labd, admin, bastion):
            await discover(bastion, MAC)
            assert (await bastion.install(MAC, hostname="node1")).status_code == 200
            ks, _ = await install_ks(bastion, MAC)
            made = (await tokens_by_id(labd, admin))[token_id(ks)]
            assert made["created_by"] == "bastion/pxe1"
            assert made["kind"] == "agent" and not made["reusable"]
            assert made["hostname"] == "node1"
            assert made["system_uuid"] == UUID.lower() and made["serial"] == SERIAL.lower()
            assert made["replace"] is False
            lifetime = datetime.fromisoformat(made["expires_at"]) - datetime.now(UTC)
            assert timedelta(hours=1, minutes=50) < lifetime <= timedelta(hours=2)
            machine = (await bastion.operator.get(f"/api/machines/{MAC}")).json()
            assert machine["settings"]["join_token_id"] == made["id"]


async def test_the_token_dies_with_the_install(tmp_path: Path) -> None:
    """Served again → the earlier token is revoked; failed or forgotten → revoked too."""
    with trio.fail_after(90):
        async with joined(tmp_path) as (labd, admin, bastion):
            await discover(bastion, MAC)
            assert (await bastion.install(MAC, hostname="node1")).status_code == 200
            first, _ = await install_ks(bastion, MAC)
            second, callback = await install_ks(bastion, MAC)  # e.g. a reboot before "partition"
            tokens = await tokens_by_id(labd, admin)
            assert tokens[token_id(first)]["revoked_at"] is not None
            assert tokens[token_id(second)]["revoked_at"] is None

            resp = await bastion.progress(
                callback, mac=MAC, phase="packages", percent=10, message="boom", failed=True
            )
            assert resp.status_code == 200, resp.text
            tokens = await tokens_by_id(labd, admin)
            assert tokens[token_id(second)]["revoked_at"] is not None
            async with labd.client() as http:
                used = await http.post(
                    "/api/auth/enroll",
                    json={
                        "token": join_token_of(second),
                        "csr": _csr(),
                        "hostname": "node1",
                        "facts": {"system_uuid": UUID, "serial": SERIAL},
                    },
                )
            assert used.status_code in (401, 403), used.text

            # Queued again and served: a new live token; forgetting the machine ends it.
            mac2 = "52:54:00:aa:00:02"
            await discover(bastion, mac2)
            assert (await bastion.install(mac2, hostname="node2")).status_code == 200
            third, _ = await install_ks(bastion, mac2)
            resp = await bastion.operator.delete(f"/api/machines/{mac2}")
            assert resp.status_code == 204
            tokens = await tokens_by_id(labd, admin)
            assert tokens[token_id(third)]["revoked_at"] is not None


async def test_a_bastion_revokes_only_its_own_tokens(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with joined(tmp_path) as (labd, admin, bastion):
            await discover(bastion, MAC)
            await bastion.install(MAC, hostname="node1")
            ks, _ = await install_ks(bastion, MAC)
            someone_elses = await labd.create_token(admin, "agent", hostname="node7")
            other_id = someone_elses.split(".", 1)[0]
            async with labd.client(bastion_creds(tmp_path / "data")) as http:
                denied = await http.delete(f"/api/tokens/{other_id}")
                assert denied.status_code == 403, denied.text
                assert denied.json()["error"]["details"]["reason"] == "bastion_limit"
                ok = await http.delete(f"/api/tokens/{token_id(ks)}")
                assert ok.status_code == 200, ok.text
            tokens = await tokens_by_id(labd, admin)
            assert tokens[other_id]["revoked_at"] is None
            assert tokens[token_id(ks)]["revoked_at"] is not None


async def test_replace_only_for_a_reprovision_of_a_known_server(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with joined(tmp_path) as (labd, admin, bastion):
            # A bastion certificate may not mint a takeover token for a name labd does not know
            # (nor any token without a hostname).
            async with labd.client(bastion_creds(tmp_path / "data")) as http:
                for body in (
                    {"kind": "agent", "hostname": "ghost", "replace": True},
                    {"kind": "agent", "ttl_seconds": 600},
                ):
                    resp = await http.post("/api/tokens", json=body)
                    assert resp.status_code == 403, resp.text
                    assert resp.json()["error"]["details"]["reason"] == "bastion_limit"
            # A first install never asks replace, so its token cannot take over server/node1.
            await discover(bastion, MAC)
            await bastion.install(MAC, hostname="node1")
            ks, callback = await install_ks(bastion, MAC)
            assert (await tokens_by_id(labd, admin))[token_id(ks)]["replace"] is False
            # node1 enrolls, its install ends; an operator asks for a reprovision.
            await labd.enroll_agent(
                "node1",
                join_token_of(ks),
                facts={"system_uuid": UUID, "serial": SERIAL},
            )
            resp = await bastion.progress(callback, mac=MAC, phase="enrolled", percent=100)
            assert resp.status_code == 200, resp.text
            resp = await bastion.operator.post("/api/reprovision", json={"mac": MAC})
            assert resp.status_code == 200, resp.text
            again, _ = await install_ks(bastion, MAC)
            made = (await tokens_by_id(labd, admin))[token_id(again)]
            assert made["replace"] is True and made["hostname"] == "node1"
            assert made["system_uuid"] == UUID.lower()


def _csr() -> str:
    return pki.make_csr(pki.generate_key(), "x").decode()


async def test_a_bastion_takes_over_only_servers_it_installed_or_an_admin_freed(
    tmp_path: Path,
) -> None:
    """A stolen bastion certificate cannot mint a takeover token for any live server."""
    with trio.fail_after(60):
        async with joined(tmp_path) as (labd, admin, _bastion):
            by_hand = await labd.create_token(admin, "agent", hostname="db1")
            await labd.enroll_agent("db1", by_hand)
            ask = {"kind": "agent", "hostname": "db1", "replace": True, "ttl_seconds": 600}
            async with labd.client(bastion_creds(tmp_path / "data")) as http:
                refused = await http.post("/api/tokens", json=ask)
                assert refused.status_code == 403, refused.text
                assert refused.json()["error"]["details"]["reason"] == "bastion_limit"
                assert "not installed by bastion/pxe1" in refused.json()["error"]["message"]
                async with labd.client(admin) as admin_http:
                    resp = await admin_http.post("/api/certs/revoke", json={"target": "server/db1"})
                    assert resp.status_code == 200, resp.text
                freed = await http.post("/api/tokens", json=ask)
                assert freed.status_code == 201, freed.text
                assert freed.json()["replace"] is True


async def test_the_kickstart_token_enrolls_only_its_machine(tmp_path: Path) -> None:
    """Read off the LAN, the token still enrolls only that name on that hardware."""
    with trio.fail_after(60):
        async with joined(tmp_path) as (labd, _admin, bastion):
            await discover(bastion, MAC)
            assert (await bastion.install(MAC, hostname="node1")).status_code == 200
            ks, _ = await install_ks(bastion, MAC)
            token = join_token_of(ks)
            right = {"system_uuid": UUID, "serial": SERIAL}
            for hostname, facts, reason in (
                ("node2", right, "token_host_mismatch"),
                ("node1", {}, "token_hardware_mismatch"),
                ("node1", {**right, "serial": "SOMEONE-ELSE"}, "token_hardware_mismatch"),
                (
                    "node1",
                    {**right, "system_uuid": "00000000-0000-0000-0000-000000000001"},
                    "token_hardware_mismatch",
                ),
            ):
                async with labd.client() as http:
                    resp = await http.post(
                        "/api/auth/enroll",
                        json={"token": token, "csr": _csr(), "hostname": hostname, "facts": facts},
                    )
                assert resp.status_code == 403, resp.text
                assert resp.json()["error"]["details"]["reason"] == reason
            # Refusals used nothing up: the machine itself still enrolls.
            await labd.enroll_agent("node1", token, facts=right)
