"""Peer identities, verification against our CAs, and CRLs."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab import pki
from lab.errors import Invalid, Unauthenticated


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _reason(der: bytes, cas: list[pki.CAMaterial | pki.CACert], at: datetime) -> str:
    with pytest.raises(Unauthenticated) as info:
        pki.verify_peer(der, cas, at=at)
    return str(info.value.details["reason"])


def test_verify_peer_accepts_our_client_cert(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, issued = pki.issue_agent_cert(ca, csr, "web1")
    ident = pki.verify_peer(_der(pem), [ca], at=datetime.now(UTC))
    assert (ident.kind, ident.name, ident.subject) == ("server", "web1", "server/web1")
    assert ident.serial == issued.serial
    assert ident.not_after == issued.not_after
    assert ident.issuer_fingerprint == ca.fingerprint()
    assert ident.fingerprint == issued.fingerprint


@pytest.mark.parametrize(
    ("issue", "kind", "name"),
    [
        (lambda ca, csr: pki.issue_user_cert(ca, csr, "ann"), "user", "ann"),
        (lambda ca, csr: pki.issue_bastion_cert(ca, csr, "pxe1"), "bastion", "pxe1"),
        (lambda ca, csr: pki.issue_replica_cert(ca, csr, "r0"), "replica", "r0"),
    ],
)
def test_every_client_kind(
    ca: pki.CAMaterial, csr: bytes, issue: object, kind: str, name: str
) -> None:
    pem, _ = issue(ca, csr)  # type: ignore[operator]
    ident = pki.verify_peer(_der(pem), [ca.ca_cert], at=datetime.now(UTC))
    assert (ident.kind, ident.name) == (kind, name)


def test_rejects_foreign_ca(ca: pki.CAMaterial, other_ca: pki.CAMaterial, csr: bytes) -> None:
    pem, _ = pki.issue_user_cert(other_ca, csr, "mallory")
    assert _reason(_der(pem), [ca], datetime.now(UTC)) == "foreign_ca"


def test_rejects_same_name_impostor_ca(ca: pki.CAMaterial, csr: bytes) -> None:
    # Same subject as our CA but another key: the name alone must not be trusted.
    impostor = pki.create_ca("labctl test CA")
    pem, _ = pki.issue_user_cert(impostor, csr, "admin")
    assert _reason(_der(pem), [ca], datetime.now(UTC)) == "foreign_ca"


def test_rejects_expired(ca: pki.CAMaterial, csr: bytes) -> None:
    past = datetime.now(UTC) - timedelta(days=60)
    pem, _ = pki.issue_agent_cert(ca, csr, "web1", lifetime=timedelta(days=30), now=past)
    assert _reason(_der(pem), [ca], datetime.now(UTC)) == "expired"


def test_rejects_not_yet_valid(ca: pki.CAMaterial, csr: bytes) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    pem, _ = pki.issue_agent_cert(ca, csr, "web1", now=future)
    assert _reason(_der(pem), [ca], datetime.now(UTC)) == "not_yet_valid"


def test_rejects_when_ca_expired(csr: bytes) -> None:
    start = datetime.now(UTC) - timedelta(days=10)
    old_ca = pki.create_ca("short-lived", lifetime=timedelta(days=5), now=start)
    pem, _ = pki.issue_user_cert(old_ca, csr, "ann", now=start)
    assert _reason(_der(pem), [old_ca], datetime.now(UTC)) == "expired"


def test_rejects_malformed(ca: pki.CAMaterial) -> None:
    assert _reason(b"not der at all", [ca], datetime.now(UTC)) == "malformed"


def test_rejects_server_only_cert(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, _ = pki.issue_server_cert(ca, csr)
    assert _reason(_der(pem), [ca], datetime.now(UTC)) == "wrong_usage"


def test_dual_trust_during_rotation(ca: pki.CAMaterial, csr: bytes) -> None:
    new_ca = pki.create_ca("labctl test CA 2")
    old_pem, _ = pki.issue_agent_cert(ca, csr, "web1")
    new_pem, _ = pki.issue_agent_cert(new_ca, csr, "web1")
    trusted = pki.load_ca_bundle(pki.ca_bundle_pem([new_ca, ca]))
    now = datetime.now(UTC)
    assert pki.verify_peer(_der(old_pem), trusted, at=now).issuer_fingerprint == ca.fingerprint()
    assert (
        pki.verify_peer(_der(new_pem), trusted, at=now).issuer_fingerprint == new_ca.fingerprint()
    )
    # Once the old CA is dropped, its certificates stop working.
    assert _reason(_der(old_pem), [new_ca], now) == "foreign_ca"


def test_identity_from_der(ca: pki.CAMaterial, other_ca: pki.CAMaterial, csr: bytes) -> None:
    pem, issued = pki.issue_user_cert(ca, csr, "ann")
    ident = pki.identity_from_der(_der(pem))
    assert (ident.kind, ident.name, ident.serial) == ("user", "ann", issued.serial)
    assert ident.issuer_fingerprint == ""
    assert pki.identity_from_der(_der(pem), [other_ca, ca]).issuer_fingerprint == ca.fingerprint()
    server_pem, _ = pki.issue_server_cert(ca, csr)
    with pytest.raises(Unauthenticated) as info:
        pki.identity_from_der(_der(server_pem))
    assert info.value.details["reason"] == "malformed"


def test_verify_peer_needs_aware_time(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, _ = pki.issue_user_cert(ca, csr, "ann")
    with pytest.raises(ValueError):
        pki.verify_peer(_der(pem), [ca], at=datetime.now())


def test_crl_lists_revoked_serials(ca: pki.CAMaterial, csr: bytes) -> None:
    _, a = pki.issue_agent_cert(ca, csr, "web1")
    _, b = pki.issue_agent_cert(ca, csr, "web2")
    _, kept = pki.issue_agent_cert(ca, csr, "web3")
    now = datetime.now(UTC)
    crl_pem = pki.build_crl(
        ca, [(a.serial, now), (b.serial, now)], next_update=now + timedelta(days=1)
    )
    assert pki.crl_serials(crl_pem, ca) == {a.serial, b.serial}
    crl = x509.load_pem_x509_crl(crl_pem)
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(int(kept.serial, 16)) is None
    assert crl.next_update_utc is not None and crl.next_update_utc > now
    empty = pki.build_crl(ca, [], next_update=now + timedelta(days=1))
    assert pki.crl_serials(empty, ca) == set()


def test_crl_input_errors(ca: pki.CAMaterial, other_ca: pki.CAMaterial) -> None:
    now = datetime.now(UTC)
    with pytest.raises(Invalid, match="hexadecimal"):
        pki.build_crl(ca, [("xyz", now)], next_update=now + timedelta(days=1))
    with pytest.raises(Invalid, match="future"):
        pki.build_crl(ca, [], next_update=now - timedelta(seconds=1))
    crl_pem = pki.build_crl(ca, [], next_update=now + timedelta(days=1))
    with pytest.raises(Invalid, match="not signed"):
        pki.crl_serials(crl_pem, other_ca)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_honours_crl(ca: pki.CAMaterial, csr: bytes, tmp_path: Path) -> None:
    revoked_pem, revoked = pki.issue_user_cert(ca, csr, "gone")
    good_pem, _ = pki.issue_user_cert(ca, csr, "ann")
    now = datetime.now(UTC)
    (tmp_path / "crl.pem").write_bytes(
        pki.build_crl(ca, [(revoked.serial, now)], next_update=now + timedelta(days=1))
    )
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())

    def verify(pem: bytes) -> subprocess.CompletedProcess[str]:
        (tmp_path / "leaf.pem").write_bytes(pem)
        return subprocess.run(
            [
                "openssl",
                "verify",
                "-crl_check",
                "-CRLfile",
                str(tmp_path / "crl.pem"),
                "-CAfile",
                str(tmp_path / "ca.pem"),
                str(tmp_path / "leaf.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    ok = verify(good_pem)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = verify(revoked_pem)
    assert bad.returncode != 0
    assert "revoked" in (bad.stdout + bad.stderr).lower()
