"""Identity over real sockets: mTLS rejection matrix, tokens, enrollment, revocation."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio

from lab import pki
from tests.labd.harness import Credentials, running_labd


async def test_rejection_matrix(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            agent_token = await labd.create_token(admin, "agent")
            agent = await labd.enroll_agent("web1", agent_token)

            foreign_ca = pki.create_ca("someone else")
            key = pki.generate_key()
            foreign_pem, _ = pki.issue_user_cert(foreign_ca, pki.make_csr(key, "x"), "admin")
            foreign = Credentials(key_pem=key, cert_pem=foreign_pem, subject="user/admin")

            # An expired certificate from *our* CA: sign it with the CA material labd stored.
            from lab.labd.identity.ca import CAService
            from lab.store import open_store

            async with open_store(labd.config.effective_database_url) as store:
                svc = CAService(store, pki.resolve_ca_passphrase(labd.data_dir))
                await svc.load()
                old_key = pki.generate_key()
                expired_pem, _ = pki.issue_user_cert(
                    svc.signer,
                    pki.make_csr(old_key, "x"),
                    "admin",
                    lifetime=timedelta(hours=1),
                    now=datetime.now(UTC) - timedelta(days=2),
                )
            expired = Credentials(key_pem=old_key, cert_pem=expired_pem, subject="user/admin")

            revoked = await labd.enroll_user(
                "bob", await labd.create_token(admin, "user", user="bob", roles=["viewer"])
            )
            async with labd.client(admin) as http:
                serial = pki.cert_info(revoked.cert_pem).serial
                resp = await http.post("/api/certs/revoke", json={"target": "user/bob"})
                assert resp.status_code == 200 and serial in resp.json()["revoked"]

            async def status(creds: Credentials | None, path: str) -> tuple[int, str]:
                try:
                    async with labd.client(creds) as http:
                        resp = await http.get(path)
                except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                    return 0, "tls_refused"  # the handshake itself failed
                return resp.status_code, resp.json()["error"]["details"].get(
                    "reason", ""
                ) if resp.status_code >= 400 else ""

            assert await status(None, "/api/tokens") == (401, "no_certificate")
            code, _ = await status(foreign, "/api/tokens")
            assert code in (0, 401)  # refused in the handshake (unknown CA) or by the check
            assert await status(expired, "/api/tokens") in ((0, "tls_refused"), (401, "expired"))
            assert await status(revoked, "/api/auth/whoami") == (401, "revoked")
            assert await status(agent, "/api/tokens") == (403, "wrong_profile")
            assert (await status(admin, "/api/tokens"))[0] == 200
            # public routes work without a certificate
            for path in ("/healthz", "/api/ca", "/api/crl"):
                async with labd.client() as http:
                    assert (await http.get(path)).status_code == 200


async def test_user_cert_cannot_open_agent_route_and_tokens_are_kind_bound(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            user_token = await labd.create_token(admin, "user", user="n1", roles=["viewer"])
            async with labd.client() as http:
                key = pki.generate_key()
                resp = await http.post(
                    "/api/auth/enroll",
                    json={
                        "token": user_token,
                        "csr": pki.make_csr(key, "x").decode(),
                        "hostname": "n1",
                    },
                )
                assert resp.status_code == 403
                assert resp.json()["error"]["details"]["reason"] == "wrong_kind"
                agent_cert = await labd.enroll_agent("n1", await labd.create_token(admin, "agent"))
            async with labd.client(agent_cert) as http:
                resp = await http.post(
                    "/api/auth/renew", json={"csr": pki.make_csr(pki.generate_key(), "x").decode()}
                )
                assert resp.status_code == 200
                assert pki.cert_info(resp.json()["certificate"].encode()).subject.endswith(
                    "server/n1"
                )


async def test_token_reasons_and_bad_csr_keeps_token(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent")
            async with labd.client() as http:
                bad = await http.post(
                    "/api/auth/enroll", json={"token": token, "csr": "garbage", "hostname": "a"}
                )
                assert bad.status_code == 400
                assert "csr" in str(bad.json()["error"]["details"])
                bad_host = await http.post(
                    "/api/auth/enroll",
                    json={
                        "token": token,
                        "csr": pki.make_csr(pki.generate_key(), "x").decode(),
                        "hostname": "-bad-",
                    },
                )
                assert bad_host.status_code == 400
                assert bad_host.json()["error"]["details"]["fields"] == ["body.hostname"]
            await labd.enroll_agent("a", token)  # the failed attempts did not use it up

            async def reason(tok: str) -> tuple[int, str]:
                async with labd.client() as http:
                    r = await http.post(
                        "/api/auth/enroll",
                        json={
                            "token": tok,
                            "csr": pki.make_csr(pki.generate_key(), "x").decode(),
                            "hostname": "b",
                        },
                    )
                return r.status_code, r.json()["error"]["details"].get("reason", "")

            assert await reason(token) == (401, "used")
            assert await reason("nope") == (401, "malformed")
            assert await reason(token.split(".")[0] + ".wrongsecret") == (401, "unknown")
            revoked = await labd.create_token(admin, "agent")
            async with labd.client(admin) as http:
                assert (
                    await http.delete(f"/api/tokens/{revoked.split('.')[0]}")
                ).status_code == 200
            assert await reason(revoked) == (401, "revoked")
            expiring = await labd.create_token(admin, "agent", ttl_seconds=1)
            # Expire it by moving the stored expiry into the past rather than waiting.
            import sqlite3

            db = sqlite3.connect(labd.data_dir / "labd.db")
            db.execute(
                "UPDATE join_tokens SET expires_at = ? WHERE id = ?",
                ((datetime.now(UTC) - timedelta(minutes=1)).isoformat(), expiring.split(".")[0]),
            )
            db.commit()
            db.close()
            assert await reason(expiring) == (401, "expired")


async def test_one_time_token_used_concurrently_yields_one_certificate(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent")
            results: list[int] = []

            async def attempt(i: int) -> None:
                async with labd.client() as http:
                    r = await http.post(
                        "/api/auth/enroll",
                        json={
                            "token": token,
                            "csr": pki.make_csr(pki.generate_key(), "x").decode(),
                            "hostname": f"h{i}",
                        },
                    )
                results.append(r.status_code)

            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(attempt, i)
            assert sorted(results) == [201] + [401] * 7
            async with labd.client(admin) as http:
                certs = (await http.get("/api/certs")).json()["items"]
            assert len([c for c in certs if c["subject"].startswith("server/")]) == 1


async def test_secrets_never_stored_or_logged_and_ca_key_encrypted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            bootstrap = labd.bootstrap_token()
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent", reusable=True)
            await labd.enroll_agent("n1", token)
            data_dir = labd.data_dir
    assert (data_dir / "bootstrap-token").stat().st_mode & 0o777 == 0o600
    blob = b"".join(p.read_bytes() for p in data_dir.glob("labd.db*"))
    for tok in (bootstrap, token):
        secret = tok.split(".", 1)[1].encode()
        assert secret not in blob
        assert secret.decode() not in caplog.text
    assert b"PRIVATE KEY" not in blob


async def test_issued_certs_verify_with_openssl(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    with trio.fail_after(30):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            agent = await labd.enroll_agent("n1", await labd.create_token(admin, "agent"))
            (tmp_path / "ca.pem").write_bytes(labd.ca_pem())
    for name, creds in (("user", admin), ("agent", agent)):
        path = tmp_path / f"{name}.pem"
        path.write_bytes(creds.cert_pem)
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(path)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr


async def test_enrollment_rate_limit(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_labd(tmp_path, enroll_rate=3.0) as labd, labd.client() as http:
            codes = []
            for _ in range(4):
                r = await http.post(
                    "/api/auth/enroll", json={"token": "a.b", "csr": "x", "hostname": "h"}
                )
                codes.append(r.status_code)
            # Three bad enrollments are refused on their merits (400/401), the fourth by the limit.
            assert 429 not in codes[:3] and codes[3] == 429
            assert int(r.headers["Retry-After"]) >= 1


async def test_wrong_ca_passphrase_exits_and_touches_nothing(tmp_path: Path) -> None:
    import sys

    from tests.e2e.procs import clean_env, run

    with trio.fail_after(30):
        async with running_labd(tmp_path):
            pass
    data = tmp_path / "labd"
    before = {
        p.name: p.read_bytes()
        for p in data.iterdir()
        if p.is_file() and not p.name.startswith("labd.db")
    }
    db_before = _dump(data / "labd.db")
    env = clean_env(
        LABD_DATA_DIR=str(data), LABD_PORT="0", LABD_HOST="127.0.0.1", LABD_CA_PASSPHRASE="wrong"
    )
    res = await trio.to_thread.run_sync(
        lambda: run([sys.executable, "-m", "lab.labd.main"], env, timeout=30)
    )
    assert res.returncode == 1
    assert res.stderr.strip().startswith("labd: error: wrong CA passphrase"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    after = {
        p.name: p.read_bytes()
        for p in data.iterdir()
        if p.is_file() and not p.name.startswith("labd.db")
    }
    assert after == before
    assert _dump(data / "labd.db") == db_before


def _dump(path: Path) -> list[str]:
    """The logical content of a SQLite file (its bytes change on any open: WAL checkpoints)."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()
