"""The servers API over real TLS: list, selectors, presence, detail, labels, RBAC and audit."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.servers.seam import audit_entries, mark_online

FACTS = {"os": "linux", "kernel": "6.1", "load": [0.1, 0.2, 0.3], "agent_version": "1.2.3"}


async def _fleet(labd: RunningLabd) -> Credentials:
    """Enroll the admin and three labelled servers; returns the admin's credentials."""
    admin = await labd.admin()
    token = await labd.create_token(admin, "agent", reusable=True)
    for name in ("web1", "web2", "db1"):
        await labd.enroll_agent(name, token, FACTS)
    async with labd.client(admin) as http:
        for name, role in (("web1", "web"), ("web2", "web"), ("db1", "db")):
            resp = await http.patch(
                f"/api/servers/{name}/labels", json={"set": {"role": role, "zone": "a"}}
            )
            assert resp.status_code == 200, resp.text
    return admin


async def test_list_select_and_status(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await _fleet(labd)
            await mark_online(labd, "web2", replica="replica-b")
            async with labd.client(admin) as http:
                resp = await http.get("/api/servers")
                assert resp.status_code == 200, resp.text
                items = resp.json()["items"]
                assert [i["name"] for i in items] == ["db1", "web1", "web2"]
                web2 = items[2]
                assert web2["status"] == "online" and web2["replica"] == "replica-b"
                assert web2["last_seen"] is not None
                assert web2["agent_version"] == "1.2.3"
                assert web2["facts"] == {"os": "linux", "load": [0.1, 0.2, 0.3]}
                assert web2["cert_serial"] and web2["cert_not_after"]
                assert web2["labels"] == {"role": "web", "zone": "a"}
                assert items[0]["status"] == "offline" and items[0]["replica"] is None

                resp = await http.get("/api/servers", params={"label": "role=web"})
                assert [i["name"] for i in resp.json()["items"]] == ["web1", "web2"]
                resp = await http.get(
                    "/api/servers", params=[("label", "role=web"), ("label", "zone=b")]
                )
                assert resp.json()["items"] == []
                resp = await http.get(
                    "/api/servers", params={"label": "zone=a", "status": "online"}
                )
                assert [i["name"] for i in resp.json()["items"]] == ["web2"]
                resp = await http.get("/api/servers", params={"status": "offline"})
                assert [i["name"] for i in resp.json()["items"]] == ["db1", "web1"]

                resp = await http.get("/api/servers", params={"status": "sleeping"})
                assert resp.status_code == 400
                assert resp.json()["error"]["details"]["fields"] == ["query.status"]
                resp = await http.get("/api/servers", params={"label": "role"})
                assert resp.status_code == 400


async def test_detail_and_404(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await _fleet(labd)
            async with labd.client(admin) as http:
                resp = await http.get("/api/servers/web1")
                assert resp.status_code == 200, resp.text
                one = resp.json()
                assert one["name"] == "web1" and one["status"] == "offline"
                assert one["facts"] == FACTS  # the full set, not the small one
                assert one["last_seen"] is None
                resp = await http.get("/api/servers/nope")
                assert resp.status_code == 404
                assert resp.json()["error"]["code"] == "not_found"
                resp = await http.patch("/api/servers/nope/labels", json={"set": {"a": "b"}})
                assert resp.status_code == 404


async def test_label_set_remove_validate_and_audit(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await _fleet(labd)
            async with labd.client(admin) as http:
                resp = await http.patch(
                    "/api/servers/web1/labels",
                    json={"set": {"example.com/tier": "gold"}, "remove": ["zone"]},
                )
                assert resp.status_code == 200, resp.text
                assert resp.json()["labels"] == {"role": "web", "example.com/tier": "gold"}

                resp = await http.patch("/api/servers/web1/labels", json={"set": {"bad key": "x"}})
                assert resp.status_code == 400
                error = resp.json()["error"]
                assert "bad key" in error["message"] and error["details"]["key"] == "bad key"
                resp = await http.patch("/api/servers/web1/labels", json={"set": {"a": "-x"}})
                assert resp.status_code == 400 and resp.json()["error"]["details"]["key"] == "a"
                resp = await http.patch("/api/servers/web1/labels", json={"remove": "zone"})
                assert resp.status_code == 400  # a string is not a list
                resp = await http.patch(
                    "/api/servers/web1/labels", json={"set": {"a": "1"}, "remove": ["a"]}
                )
                assert resp.status_code == 400
                resp = await http.get("/api/servers/web1")
                assert resp.json()["labels"] == {"role": "web", "example.com/tier": "gold"}

            entries = await audit_entries(labd, "servers:label")
            mine = [e for e in entries if e.resource == "server/web1" and e.result == "success"]
            # One from the fleet set-up, one here; the refused attempts changed nothing.
            assert len(mine) == 2
            last = mine[-1]
            assert last.user == "user/admin" and last.result == "success"
            assert last.details["set"] == {"example.com/tier": "gold"}
            assert last.details["remove"] == ["zone"]
            assert last.details["before"] == {"role": "web", "zone": "a"}


async def test_viewer_lists_but_cannot_label(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await _fleet(labd)
            viewer = await labd.enroll_user(
                "vera", await labd.create_token(admin, "user", user="vera", roles=["viewer"])
            )
            async with labd.client(viewer) as http:
                resp = await http.get("/api/servers")
                assert resp.status_code == 200 and len(resp.json()["items"]) == 3
                resp = await http.get("/api/servers/db1")
                assert resp.status_code == 200
                resp = await http.patch("/api/servers/db1/labels", json={"set": {"x": "y"}})
                assert resp.status_code == 403, resp.text
                assert resp.json()["error"]["code"] == "permission_denied"
                resp = await http.get("/api/servers/db1")
                assert resp.json()["labels"] == {"role": "db", "zone": "a"}

            denied = [e for e in await audit_entries(labd, "servers:label") if e.result == "denied"]
            assert len(denied) == 1
            assert denied[0].user == "user/vera" and denied[0].resource == "server/db1"
            assert denied[0].session  # the certificate serial of the refused caller


async def test_agent_certificate_cannot_use_the_admin_api(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            agent = await labd.enroll_agent("web1", await labd.create_token(admin, "agent"))
            async with labd.client(agent) as http:
                resp = await http.get("/api/servers")
                assert resp.status_code == 403
            denied = [e for e in await audit_entries(labd, "servers:list") if e.result == "denied"]
            assert len(denied) == 1 and denied[0].resource == "server/*"
