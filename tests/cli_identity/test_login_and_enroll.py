"""labctl login and lab-agent enroll against a labd stand-in over real TLS."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import yaml

from lab import pki
from lab.agent.identity import enroll, load_enrolled, renew
from lab.cli.login import login
from lab.client.api import LabClient, renew_in_place, trust_on_first_use
from lab.client.settings import load_settings
from lab.errors import ConfigError, Unauthenticated
from tests.cli_identity.fake_labd import FakeLabd, serving


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_trust_on_first_use_reads_the_bundle_unverified(url: str, ca: pki.CAMaterial) -> None:
    with trio.fail_after(10):
        bundle, fingerprint = await trust_on_first_use(url)
    assert bundle == pki.ca_bundle_pem([ca])
    assert fingerprint == ca.fingerprint()


async def test_login_with_fingerprint_stores_identity_and_settings(
    url: str, fake: FakeLabd, ca: pki.CAMaterial, labctl_home: Path
) -> None:
    with trio.fail_after(15):
        result = await login(url, "good-user", username="ann", ca_fingerprint=ca.fingerprint())
    assert result.user == "ann" and result.roles == ("admin",)
    assert result.ca_fingerprint == ca.fingerprint()
    assert mode(labctl_home) == 0o700
    assert mode(labctl_home / "key.pem") == 0o600
    assert pki.cert_info((labctl_home / "cert.pem").read_bytes()).subject == "user/ann"
    assert (labctl_home / "ca.pem").read_bytes() == pki.ca_bundle_pem([ca])
    settings = load_settings()
    assert settings.server == url and settings.ca_fingerprint == ca.fingerprint()
    [sent] = fake.sent("/api/auth/user-enroll")
    assert sent["username"] == "ann" and sent["token"] == "good-user"
    assert "PRIVATE KEY" not in sent["csr"]
    # The stored identity is usable: mTLS to a route that needs a client certificate.
    with trio.fail_after(10):
        async with LabClient.from_settings() as client:
            me = await client.get("/api/auth/whoami")
    assert (me["kind"], me["name"]) == ("user", "ann")


async def test_key_file_is_created_private_even_with_a_lax_umask(
    url: str, ca: pki.CAMaterial, labctl_home: Path
) -> None:
    old = os.umask(0)
    try:
        with trio.fail_after(15):
            await login(url, "good-user", username="ann", ca_fingerprint=ca.fingerprint())
    finally:
        os.umask(old)
    assert mode(labctl_home / "key.pem") == 0o600
    assert mode(labctl_home) == 0o700


async def test_fingerprint_mismatch_refuses_before_sending_the_token(
    url: str, fake: FakeLabd, rogue_ca: pki.CAMaterial, labctl_home: Path
) -> None:
    with trio.fail_after(10), pytest.raises(Unauthenticated) as info:
        await login(url, "good-user", username="ann", ca_fingerprint=rogue_ca.fingerprint())
    assert info.value.details["reason"] == "fingerprint_mismatch"
    assert fake.sent("/api/auth/user-enroll") == []
    assert not labctl_home.exists()


async def test_no_fingerprint_no_terminal_no_tofu_refuses(
    url: str, fake: FakeLabd, labctl_home: Path
) -> None:
    with trio.fail_after(10), pytest.raises(Unauthenticated) as info:
        await login(url, "good-user", username="ann", confirm=None, tofu=False)
    assert info.value.details["reason"] == "untrusted"
    assert "--insecure-trust-on-first-use" in info.value.details["hint"]
    assert fake.sent("/api/auth/user-enroll") == []
    assert not labctl_home.exists()


async def test_prompt_sees_the_fingerprint_and_can_decline(
    url: str, fake: FakeLabd, ca: pki.CAMaterial
) -> None:
    asked: list[tuple[str, str]] = []

    def decline(fingerprint: str, subject: str) -> bool:
        asked.append((fingerprint, subject))
        return False

    with trio.fail_after(10), pytest.raises(Unauthenticated):
        await login(url, "good-user", username="ann", confirm=decline)
    assert asked == [(ca.fingerprint(), ca.subject)]
    assert fake.sent("/api/auth/user-enroll") == []

    with trio.fail_after(10):
        result = await login(url, "good-user", username="ann", confirm=lambda fp, s: True)
    assert result.user == "ann"


async def test_tofu_trusts_only_the_first_ca_of_the_bundle(
    ca: pki.CAMaterial, rogue_ca: pki.CAMaterial
) -> None:
    # A man in the middle appends his CA behind the genuine one and serves TLS with it:
    # the fingerprint of the first CA matches, but his certificate must still be refused.
    fake = FakeLabd(ca, served_bundle=pki.ca_bundle_pem([ca, rogue_ca]))
    with trio.fail_after(15):
        async with serving(fake, tls_ca=rogue_ca) as url:
            with pytest.raises(Unauthenticated) as info:
                await login(url, "good-user", username="ann", ca_fingerprint=ca.fingerprint())
    assert info.value.details["reason"] == "server_not_trusted"
    assert fake.sent("/api/auth/user-enroll") == []


async def test_bad_token_is_unauthenticated_and_writes_nothing(url: str, labctl_home: Path) -> None:
    with trio.fail_after(10), pytest.raises(Unauthenticated) as info:
        await login(url, "nope", username="ann", tofu=True)
    assert info.value.details["reason"] == "bad_token"
    assert "tokens create --kind user" in info.value.details["hint"]
    assert not (labctl_home / "key.pem").exists()


async def test_group_readable_key_is_refused(
    url: str, ca: pki.CAMaterial, labctl_home: Path
) -> None:
    with trio.fail_after(15):
        await login(url, "good-user", username="ann", ca_fingerprint=ca.fingerprint())
    (labctl_home / "key.pem").chmod(0o640)
    with pytest.raises(ConfigError) as info:
        LabClient.from_settings()
    assert "chmod 600" in info.value.details["hint"]


async def test_no_identity_asks_to_log_in() -> None:
    with pytest.raises(Unauthenticated) as info:
        LabClient.from_settings()
    assert "labctl login" in info.value.details["hint"]


async def test_renew_keeps_the_key_and_replaces_the_certificate(
    url: str, ca: pki.CAMaterial, labctl_home: Path
) -> None:
    with trio.fail_after(15):
        await login(url, "good-user", username="ann", ca_fingerprint=ca.fingerprint())
        key = (labctl_home / "key.pem").read_bytes()
        old = pki.cert_info((labctl_home / "cert.pem").read_bytes())
        await renew_in_place(labctl_home, url)
    new = pki.cert_info((labctl_home / "cert.pem").read_bytes())
    assert new.serial != old.serial and new.subject == "user/ann"
    assert (labctl_home / "key.pem").read_bytes() == key


async def test_agent_enroll_and_renew(
    url: str, fake: FakeLabd, ca: pki.CAMaterial, tmp_path: Path
) -> None:
    state = tmp_path / "agent-state"
    with trio.fail_after(15):
        identity = await enroll(
            url,
            "good-agent",
            hostname="web1",
            facts={"os": "linux"},
            ca_fingerprint=ca.fingerprint(),
            tofu=False,
            state_dir=state,
        )
    assert identity.subject == "server/web1"
    assert identity.server_id.startswith("srv-")
    assert mode(state) == 0o700 and mode(state / "key.pem") == 0o600
    data = yaml.safe_load((state / "agent.yaml").read_text())
    assert data["server"] == url and data["server_name"] == "web1"
    assert data["ca_fingerprint"] == ca.fingerprint()
    [sent] = fake.sent("/api/auth/enroll")
    assert sent["hostname"] == "web1" and sent["facts"] == {"os": "linux"}
    assert load_enrolled(state).not_after == identity.not_after

    key = (state / "key.pem").read_bytes()
    before = pki.cert_info((state / "cert.pem").read_bytes()).serial
    with trio.fail_after(15):
        renewed = await renew(state)
    assert pki.cert_info((state / "cert.pem").read_bytes()).serial != before
    assert (state / "key.pem").read_bytes() == key
    assert renewed.server_id == identity.server_id


async def test_agent_enroll_refuses_without_trust(url: str, fake: FakeLabd, tmp_path: Path) -> None:
    with trio.fail_after(10), pytest.raises(Unauthenticated):
        await enroll(
            url,
            "good-agent",
            hostname="web1",
            facts={},
            ca_fingerprint=None,
            tofu=False,
            state_dir=tmp_path / "s",
        )
    assert fake.sent("/api/auth/enroll") == []
    assert not (tmp_path / "s").exists()


async def test_agent_renew_before_enroll_says_so(tmp_path: Path) -> None:
    with pytest.raises(Unauthenticated) as info:
        await renew(tmp_path / "never")
    assert "lab-agent enroll" in info.value.details["hint"]


async def run_labctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=env,
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_cli_login_exit_codes_and_whoami(
    url: str, fake: FakeLabd, ca: pki.CAMaterial, rogue_ca: pki.CAMaterial, labctl_home: Path
) -> None:
    env = {**os.environ, "LABCTL_HOME": str(labctl_home)}
    with trio.fail_after(60):
        # stdin is not a terminal: no prompt, refusal with exit 3 and a hint.
        refused = await run_labctl("login", "--server", url, "--token", "good-user", env=env)
        assert refused.returncode == 3, refused.stderr
        assert b"--insecure-trust-on-first-use" in refused.stderr
        mismatch = await run_labctl(
            "login",
            "--server",
            url,
            "--token",
            "good-user",
            "--ca-fingerprint",
            rogue_ca.fingerprint(),
            env=env,
        )
        assert mismatch.returncode == 3
        assert b"refusing to log in" in mismatch.stderr
        assert fake.sent("/api/auth/user-enroll") == []
        ok = await run_labctl(
            "login",
            "--server",
            url,
            "--token",
            "good-user",
            "--username",
            "bob",
            "--insecure-trust-on-first-use",
            env=env,
        )
        assert ok.returncode == 0, ok.stderr
        assert b"as user/bob (roles: admin)" in ok.stdout
        me = await run_labctl("whoami", "-o", "json", env=env)
        assert me.returncode == 0, me.stderr
        assert b'"name": "bob"' in me.stdout
