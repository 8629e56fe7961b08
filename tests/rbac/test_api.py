"""Users, roles, can-i/explain, audit of every request, validation and rate limits, over the
real HTTPS API; every answer is checked against schema/openapi.yaml."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import trio

from lab import pki
from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.rbac.spec import check


async def call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    template: str,
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    resp = await http.request(method, path, json=json, params=params, headers=headers)
    check(resp, template)
    return resp


async def oversized_post(labd: RunningLabd, path: str) -> tuple[bytes, bytes]:
    """POST a 3 MB body over a raw TLS stream (httpx would still be sending it when labd
    answers); returns the answer's head and body."""
    ctx = labd.ssl_context(alpn=["http/1.1"])
    stream = await trio.open_ssl_over_tcp_stream(labd.host, labd.port, ssl_context=ctx)
    try:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nHost: labd\r\nContent-Type: application/json\r\n"
            "Content-Length: 3000000\r\n\r\n".encode()
            + b"[" * 65536
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def audit_log(labd: RunningLabd, admin: Credentials, **params: str) -> list[dict[str, Any]]:
    async with labd.client(admin) as http:
        resp = await call(http, "GET", "/api/audit", "/api/audit", params=params)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


async def new_user(labd: RunningLabd, admin: Credentials, name: str, *roles: str) -> Credentials:
    async with labd.client(admin) as http:
        resp = await call(
            http, "POST", "/api/users", "/api/users", json={"name": name, "roles": list(roles)}
        )
    assert resp.status_code == 201, resp.text
    assert resp.json()["roles"] == sorted(roles)
    return await labd.enroll_user(name, resp.json()["token"])


async def test_roles_users_can_i_and_explain(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await call(
                    http,
                    "POST",
                    "/api/roles",
                    "/api/roles",
                    json={
                        "name": "web-ops",
                        "description": "exec on web servers",
                        "permissions": [
                            {"effect": "allow", "action": "exec:*", "resource": "server/web-*"}
                        ],
                    },
                )
                assert resp.status_code == 201, resp.text
                resp = await call(
                    http,
                    "POST",
                    "/api/roles/web-ops/rules",
                    "/api/roles/{name}/rules",
                    json={"effect": "deny", "action": "exec:*", "resource": "server/web-db"},
                )
                assert [(p["effect"], p["action"]) for p in resp.json()["permissions"]] == [
                    ("allow", "auth:*"),  # self-service comes with every new role
                    ("allow", "exec:*"),
                    ("deny", "exec:*"),
                ]
                dup = await call(http, "POST", "/api/roles", "/api/roles", json={"name": "web-ops"})
                assert dup.status_code == 409
                builtin = await call(
                    http,
                    "POST",
                    "/api/roles/viewer/rules",
                    "/api/roles/{name}/rules",
                    json={"effect": "allow", "action": "*:*", "resource": "*"},
                )
                assert builtin.status_code == 409
                listed = await call(http, "GET", "/api/roles", "/api/roles")
                assert {"admin", "operator", "viewer", "web-ops"} <= {
                    r["name"] for r in listed.json()["items"]
                }

            ann = await new_user(labd, admin, "ann", "web-ops")
            async with labd.client(ann) as http:
                me = await call(http, "GET", "/api/auth/whoami", "/api/auth/whoami")
                assert me.status_code == 200 and me.json()["roles"] == ["web-ops"]

                async def can(action: str, resource: str) -> dict[str, Any]:
                    resp = await call(
                        http,
                        "GET",
                        "/api/auth/can-i",
                        "/api/auth/can-i",
                        params={"action": action, "resource": resource},
                    )
                    assert resp.status_code == 200, resp.text
                    answer: dict[str, Any] = resp.json()
                    return answer

                assert (await can("exec:run", "server/web-1"))["allowed"] is True
                refused = await can("exec:run", "server/web-db")
                assert refused["allowed"] is False
                assert refused["decided_by"]["effect"] == "deny"
                assert (await can("users:create", "user/*"))["decided_by"] is None
                # ann may ask about herself only
                other = await call(
                    http,
                    "GET",
                    "/api/auth/explain",
                    "/api/auth/explain",
                    params={"user": "admin", "action": "x:y", "resource": "z"},
                )
                assert other.status_code == 403

            async with labd.client(admin) as http:
                resp = await call(
                    http,
                    "GET",
                    "/api/auth/explain",
                    "/api/auth/explain",
                    params={"user": "ann", "action": "exec:run", "resource": "server/web-db"},
                )
                answer = resp.json()
                assert answer["allowed"] is False and answer["roles"] == ["web-ops"]
                assert [m["effect"] for m in answer["matched"]] == ["allow", "deny"]
                assert answer["decided_by"] == {
                    "role": "web-ops",
                    "effect": "deny",
                    "action": "exec:*",
                    "resource": "server/web-db",
                }
                missing = await call(
                    http,
                    "GET",
                    "/api/auth/can-i",
                    "/api/auth/can-i",
                    params={"action": "x:y"},
                )
                assert missing.status_code == 400
                assert missing.json()["error"]["details"]["fields"] == ["query.resource"]
                held = await call(http, "DELETE", "/api/roles/web-ops", "/api/roles/{name}")
                assert held.status_code == 409  # ann still holds it
                users = await call(http, "GET", "/api/users", "/api/users")
                assert {"name": "ann", "roles": ["web-ops"], "disabled": False}.items() <= next(
                    u for u in users.json()["items"] if u["name"] == "ann"
                ).items()

                # disabling revokes ann's certificate: her next request is refused
                off = await call(
                    http, "POST", "/api/users/ann/disable", "/api/users/{name}/disable"
                )
                assert off.status_code == 200 and off.json()["disabled"] is True
                assert off.json()["revoked"] == [pki.cert_info(ann.cert_pem).serial]
            async with labd.client(ann) as http:
                gone = await call(http, "GET", "/api/auth/whoami", "/api/auth/whoami")
                assert gone.status_code == 401
                assert gone.json()["error"]["details"]["reason"] == "revoked"


async def test_viewer_is_refused_administration_and_the_refusals_are_audited(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            vic = await new_user(labd, admin, "vic", "viewer")
            serial = pki.cert_info(vic.cert_pem).serial
            async with labd.client(vic) as http:
                for method, path, template, body in [
                    ("POST", "/api/tokens", "/api/tokens", {"kind": "agent"}),
                    ("POST", "/api/users", "/api/users", {"name": "eve", "roles": ["admin"]}),
                    ("GET", "/api/audit", "/api/audit", None),
                    ("POST", "/api/roles/viewer/rules", "/api/roles/{name}/rules", {}),
                ]:
                    resp = await call(http, method, path, template, json=body)
                    assert resp.status_code == 403, (path, resp.text)
                ok = await call(http, "GET", "/api/servers", "/api/servers")
                assert ok.status_code == 200
                can = await call(
                    http,
                    "GET",
                    "/api/auth/can-i",
                    "/api/auth/can-i",
                    params={"action": "exec:run", "resource": "server/web1"},
                )
                assert can.json()["allowed"] is False
                assert can.json()["decided_by"]["action"] == "exec:*"
            denied = await audit_log(labd, admin, user="user/vic")
            by_action = {e["action"]: e for e in denied}
            for action, resource in [
                ("tokens:create", "token/*"),
                ("users:create", "user/*"),
                ("audit:read", "audit/*"),
                ("roles:update", "role/viewer"),
            ]:
                entry = by_action[action]
                assert entry["result"] == "denied" and entry["resource"] == resource
                assert entry["session"] == serial and entry["details"]["status"] == 403
            assert by_action["servers:list"]["result"] == "success"


async def test_every_request_is_audited_once_with_its_outcome(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            serial = pki.cert_info(admin.cert_pem).serial
            async with labd.client(admin) as http:
                rid = {"X-Request-Id": "req-42"}
                await call(http, "GET", "/api/users", "/api/users", headers=rid)
                await call(http, "GET", "/api/users/nobody", "/api/users/{name}")
                bad = await call(http, "POST", "/api/roles", "/api/roles", json={"name": 3})
                assert bad.status_code == 400
                assert bad.json()["error"]["details"]["fields"] == [
                    "invalid type (<class 'int'>) @ body.name"
                ] or "body.name" in str(bad.json()["error"]["details"]["fields"])
            async with labd.client() as anonymous:
                nocert = await call(anonymous, "GET", "/api/users", "/api/users")
                assert nocert.status_code == 401
                for path in ("/healthz", "/health/ready", "/api/ca", "/api/crl"):
                    assert (await anonymous.get(path)).status_code == 200
            entries = await audit_log(labd, admin)
            mine = [
                e
                for e in entries
                if e["details"].get("path", "").startswith("/api/")
                and e["action"] != "auth:user-enroll"
            ]
            rows = [
                (e["user"], e["action"], e["resource"], e["result"], e["details"]["status"])
                for e in mine
            ]
            assert rows == [
                ("user/admin", "users:list", "user/*", "success", 200),
                ("user/admin", "users:get", "user/nobody", "error", 404),
                ("user/admin", "roles:create", "role/*", "error", 400),
                ("", "users:list", "user/*", "denied", 401),
            ]
            first = mine[0]
            assert first["session"] == serial and first["source"] == "127.0.0.1"
            assert (
                first["details"]["method"] == "GET" and first["details"]["request_id"] == "req-42"
            )
            assert first["duration_ms"] > 0
            assert mine[3]["details"]["reason"] == "no_certificate"
            # health, CA and CRL are not audited
            assert not [e for e in entries if e["details"].get("path") in ("/healthz", "/api/ca")]


async def test_enrollments_are_audited_including_failures(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent")
            async with labd.client() as http:
                csr = pki.make_csr(pki.generate_key(), "x").decode()
                wrong = await call(
                    http,
                    "POST",
                    "/api/auth/enroll",
                    "/api/auth/enroll",
                    json={"token": "id.nope", "csr": csr, "hostname": "web9"},
                )
                assert wrong.status_code == 401
                junk = await call(
                    http, "POST", "/api/auth/enroll", "/api/auth/enroll", json={"token": 1}
                )
                assert junk.status_code == 400
                bad_user = await call(
                    http,
                    "POST",
                    "/api/auth/user-enroll",
                    "/api/auth/user-enroll",
                    json={"token": token, "csr": csr, "username": "mallory"},
                )
                assert bad_user.status_code == 403  # an agent token cannot enroll a user
            await labd.enroll_agent("web1", token)
            entries = await audit_log(labd, admin)
            enrolls = [
                (e["action"], e["resource"], e["result"], e["details"]["status"])
                for e in entries
                if e["action"].startswith("auth:") and e["action"].endswith("enroll")
            ]
            assert enrolls == [
                ("auth:user-enroll", "user/admin", "success", 201),
                ("auth:enroll", "server/web9", "denied", 401),
                ("auth:enroll", "", "error", 400),
                ("auth:user-enroll", "user/mallory", "denied", 403),
                ("auth:enroll", "server/web1", "success", 201),
            ]
            assert all(token.split(".", 1)[1] not in str(e) for e in entries)


async def test_bodies_are_validated_and_size_limited(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await call(
                    http,
                    "POST",
                    "/api/roles",
                    "/api/roles",
                    json={
                        "name": "r1",
                        "permissions": [{"effect": "maybe", "action": "a", "resource": 5}],
                        "colour": "red",
                    },
                )
                assert resp.status_code == 400
                fields = " ".join(resp.json()["error"]["details"]["fields"])
                for path in (
                    "body.permissions[0].effect",
                    "body.permissions[0].resource",
                    "colour",
                ):
                    assert path in fields, fields
                bad_rule = await call(
                    http,
                    "POST",
                    "/api/roles",
                    "/api/roles",
                    json={
                        "name": "r1",
                        "permissions": [{"effect": "allow", "action": "a b", "resource": "x"}],
                    },
                )
                assert bad_rule.json()["error"]["details"]["fields"] == [
                    "body.permissions[0].action"
                ]
                not_json = await http.post(
                    "/api/roles", content=b"{", headers={"content-type": "application/json"}
                )
                check(not_json, "/api/roles")
                assert not_json.status_code == 400
                query = await call(
                    http, "GET", "/api/audit", "/api/audit", params={"limit": "0", "since": "x"}
                )
                assert query.status_code == 400
            # A body over 1 MiB is refused from its Content-Length, before it is read.
            head, body = await oversized_post(labd, "/api/auth/enroll")
            assert head.startswith(b"HTTP/1.1 413 ")
            assert json.loads(body)["error"]["code"] == "too_large"
            entries = await audit_log(labd, admin, action="auth:enroll")
            assert [(e["result"], e["details"]["status"]) for e in entries] == [("error", 413)]


async def test_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path, rate_global=6, rate_tokens=2) as labd:
            admin = await labd.admin()  # the enrollment takes one request of its address
            async with labd.client(admin) as http:
                tokens = [
                    (await call(http, "POST", "/api/tokens", "/api/tokens", json={"kind": "agent"}))
                    for _ in range(3)
                ]
                assert [r.status_code for r in tokens] == [201, 201, 429]
                assert int(tokens[2].headers["Retry-After"]) >= 1
                codes = [
                    (await call(http, "GET", "/api/users", "/api/users")).status_code
                    for _ in range(5)
                ]
                # 6 per minute per certificate: 3 token requests and 3 more get through
                assert codes == [200, 200, 200, 429, 429]
            async with labd.client() as anonymous:
                # health probes are never limited; the limit of the admin's certificate is not
                # the limit of this address
                for _ in range(10):
                    assert (await anonymous.get("/health/live")).status_code == 200
                assert (await anonymous.get("/api/ca")).status_code == 200


async def test_an_action_whose_audit_entry_cannot_be_written_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            # Hold SQLite's write lock: readers go on (WAL), every write times out.
            lock = sqlite3.connect(labd.data_dir / "labd.db", isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")
                async with labd.client(admin) as http:
                    resp = await call(http, "GET", "/api/auth/whoami", "/api/auth/whoami")
                assert resp.status_code == 503
                assert resp.json()["error"]["details"]["reason"] == "audit_unavailable"
            finally:
                lock.rollback()
                lock.close()
            async with labd.client(admin) as http:
                assert (await http.get("/api/auth/whoami")).status_code == 200
                verdict = await call(http, "GET", "/api/audit/verify", "/api/audit/verify")
            assert verdict.json()["ok"] is True, verdict.json()
            entries = await audit_log(labd, admin, action="auth:whoami")
            assert len(entries) == 1  # the refused request left no entry, the next one did
