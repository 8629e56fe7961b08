"""Certificate profiles and CSR vetting; issued certificates checked by the openssl CLI."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import pki
from lab.errors import Invalid

CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]
SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]
BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return (
        san.get_values_for_type(x509.DNSName),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
    )


def _csr_for(key: object) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tamper-me")])
    )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return builder.sign(key, None).public_bytes(serialization.Encoding.PEM)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_agent_profile(ca: pki.CAMaterial, csr: bytes, client_key: bytes) -> None:
    now = datetime.now(UTC)
    pem, issued = pki.issue_agent_cert(ca, csr, "web1", now=now)
    cert = _cert(pem)
    assert _cn(cert) == "server/web1" == issued.subject
    assert issued.profile == "agent"
    assert _eku(cert) == CLIENT
    assert _sans(cert) == ([], [])
    assert cert.not_valid_after_utc - now == pytest.approx(
        timedelta(days=30), abs=timedelta(seconds=1)
    )
    assert cert.not_valid_before_utc <= now
    assert cert.issuer == ca.cert.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    # Only the CSR's public key is used: it is the client's key.
    key = serialization.load_pem_private_key(client_key, password=None)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(
        serialization.Encoding.PEM, pub
    ) == key.public_key().public_bytes(serialization.Encoding.PEM, pub)
    assert (
        re.fullmatch(r"[0-9a-f]+", issued.serial) and int(issued.serial, 16) == cert.serial_number
    )
    assert issued.issuer_fingerprint == ca.fingerprint()
    assert issued.not_after == cert.not_valid_after_utc
    record = issued.to_record()
    assert (record.serial, record.subject, record.profile) == (
        issued.serial,
        "server/web1",
        "agent",
    )


def test_user_profile(ca: pki.CAMaterial, csr: bytes) -> None:
    now = datetime.now(UTC)
    pem, issued = pki.issue_user_cert(ca, csr, "ann@example", now=now)
    cert = _cert(pem)
    assert _cn(cert) == "user/ann@example"
    assert issued.profile == "user"
    assert _eku(cert) == CLIENT
    assert cert.not_valid_after_utc - now == pytest.approx(
        timedelta(days=90), abs=timedelta(seconds=1)
    )


def test_custom_lifetime_and_serials_differ(ca: pki.CAMaterial, csr: bytes) -> None:
    now = datetime.now(UTC)
    _, a = pki.issue_agent_cert(ca, csr, "web1", lifetime=timedelta(hours=1), now=now)
    _, b = pki.issue_agent_cert(ca, csr, "web1", lifetime=timedelta(hours=1), now=now)
    assert a.not_after - now == pytest.approx(timedelta(hours=1), abs=timedelta(seconds=1))
    assert a.serial != b.serial


def test_leaf_never_outlives_ca(ca: pki.CAMaterial, csr: bytes) -> None:
    _, issued = pki.issue_user_cert(ca, csr, "ann", lifetime=timedelta(days=20000))
    assert issued.not_after == ca.not_after


def test_server_profile_default_sans(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, issued = pki.issue_server_cert(ca, csr)
    cert = _cert(pem)
    assert _eku(cert) == SERVER
    assert _sans(cert) == (["localhost"], ["127.0.0.1", "::1"])
    assert issued.profile == "server"


def test_server_profile_custom_sans(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, _ = pki.issue_server_cert(
        ca, csr, ["labd.lab.example", "LABD"], [ipaddress.ip_address("10.0.0.1")]
    )
    assert _sans(_cert(pem)) == (["labd.lab.example", "labd"], ["10.0.0.1"])


def test_bastion_profile(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, issued = pki.issue_bastion_cert(ca, csr, "pxe1")
    cert = _cert(pem)
    assert _cn(cert) == "bastion/pxe1" and issued.profile == "bastion"
    assert _eku(cert) == BOTH
    assert _sans(cert) == ([], [])
    pem, _ = pki.issue_bastion_cert(ca, csr, "pxe1", ["pxe1.lab"], ["192.168.1.2"])
    assert _sans(_cert(pem)) == (["pxe1.lab"], ["192.168.1.2"])


def test_replica_profile(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, issued = pki.issue_replica_cert(ca, csr, "labd-0", ["labd-0.labd"], ["10.1.2.3"])
    cert = _cert(pem)
    assert _cn(cert) == "replica/labd-0" and issued.profile == "replica"
    assert _eku(cert) == BOTH
    assert _sans(cert) == (["labd-0.labd"], ["10.1.2.3"])


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a,b", "x" * 200, "ann smith"])
def test_bad_names_rejected(ca: pki.CAMaterial, csr: bytes, name: str) -> None:
    with pytest.raises(Invalid) as info:
        pki.issue_agent_cert(ca, csr, name)
    assert info.value.details["fields"] == ["server_name"]


def test_bad_sans_rejected(ca: pki.CAMaterial, csr: bytes) -> None:
    with pytest.raises(Invalid, match="DNS name"):
        pki.issue_server_cert(ca, csr, ["bad_host!"], [])
    with pytest.raises(Invalid, match="IP address"):
        pki.issue_server_cert(ca, csr, [], ["300.1.1.1"])
    with pytest.raises(Invalid, match="at least one"):
        pki.issue_server_cert(ca, csr, [], [])


@pytest.mark.parametrize(
    ("make_key", "key_type"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ec-p256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ec-p384"),
        (ed25519.Ed25519PrivateKey.generate, "ed25519"),
        (lambda: rsa.generate_private_key(65537, 2048), "rsa-2048"),
    ],
)
def test_accepted_keys(ca: pki.CAMaterial, make_key: object, key_type: str) -> None:
    csr = _csr_for(make_key())  # type: ignore[operator]
    assert pki.parse_csr(csr).key_type == key_type
    pem, _ = pki.issue_user_cert(ca, csr, "ann")
    _cert(pem).verify_directly_issued_by(ca.cert)


def _reason(csr: bytes) -> str:
    with pytest.raises(Invalid) as info:
        pki.parse_csr(csr)
    assert info.value.details["fields"] == ["csr"]
    assert info.value.message.startswith("csr: ")
    return str(info.value.details["reason"])


def test_rejects_rsa_1024() -> None:
    assert _reason(_csr_for(rsa.generate_private_key(65537, 1024))) == "weak_key"


def test_rejects_unsupported_curve() -> None:
    assert _reason(_csr_for(ec.generate_private_key(ec.SECP521R1()))) == "unsupported_key"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_rejects_garbage(garbage: bytes) -> None:
    assert _reason(garbage) == "malformed"


def test_rejects_oversized() -> None:
    assert _reason(b"A" * 20000) == "too_large"


def test_rejects_bad_signature() -> None:
    der = x509.load_pem_x509_csr(_csr_for(ec.generate_private_key(ec.SECP256R1()))).public_bytes(
        serialization.Encoding.DER
    )
    tampered = der.replace(b"tamper-me", b"tamper-mf")
    assert tampered != der
    pem = x509.load_der_x509_csr(tampered).public_bytes(serialization.Encoding.PEM)
    assert _reason(pem) == "bad_signature"
    ca = pki.create_ca("c")
    with pytest.raises(Invalid):
        pki.issue_agent_cert(ca, pem, "web1")


def test_make_csr_rejects_bad_key() -> None:
    with pytest.raises(Invalid) as info:
        pki.make_csr(b"not a key", "x")
    assert info.value.details["fields"] == ["key"]


def test_cert_info(ca: pki.CAMaterial, csr: bytes) -> None:
    pem, issued = pki.issue_agent_cert(ca, csr, "web1")
    info = pki.cert_info(pem)
    assert (info.subject, info.serial, info.not_after) == (
        "server/web1",
        issued.serial,
        issued.not_after,
    )
    assert info.fingerprint == issued.fingerprint
    with pytest.raises(Invalid):
        pki.cert_info(b"junk")


openssl = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(openssl is None, reason="openssl CLI not installed")


def _openssl_verify(
    tmp_path: Path, ca_pem: bytes, leaf_pem: bytes, *extra: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    assert openssl is not None
    return subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(tmp_path / "ca.pem"),
            *extra,
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_openssl
def test_openssl_verifies_every_profile(ca: pki.CAMaterial, csr: bytes, tmp_path: Path) -> None:
    cases = [
        (pki.issue_agent_cert(ca, csr, "web1")[0], "sslclient"),
        (pki.issue_user_cert(ca, csr, "ann")[0], "sslclient"),
        (pki.issue_server_cert(ca, csr)[0], "sslserver"),
        (pki.issue_bastion_cert(ca, csr, "pxe1")[0], "sslclient"),
        (pki.issue_bastion_cert(ca, csr, "pxe1", ["pxe1.lab"])[0], "sslserver"),
        (pki.issue_replica_cert(ca, csr, "r1")[0], "sslserver"),
        (pki.issue_replica_cert(ca, csr, "r1")[0], "sslclient"),
    ]
    for pem, purpose in cases:
        result = _openssl_verify(tmp_path, ca.cert_pem(), pem, "-purpose", purpose)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK" in result.stdout


@needs_openssl
def test_openssl_rejects_wrong_purpose_and_foreign_ca(
    ca: pki.CAMaterial, other_ca: pki.CAMaterial, csr: bytes, tmp_path: Path
) -> None:
    agent_pem, _ = pki.issue_agent_cert(ca, csr, "web1")
    assert (
        _openssl_verify(tmp_path, ca.cert_pem(), agent_pem, "-purpose", "sslserver").returncode != 0
    )
    assert _openssl_verify(tmp_path, other_ca.cert_pem(), agent_pem).returncode != 0
