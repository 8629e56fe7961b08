"""PeerVerifier: verify_peer that skips the signature check of a certificate it has proved,
and only while the same CAs are trusted and the time lies within both validity windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab import pki
from lab.errors import Unauthenticated


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _reason(verifier: pki.PeerVerifier, der: bytes, cas: list[pki.CAMaterial], at: datetime) -> str:
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(der, cas, at=at)
    return str(info.value.details["reason"])


def test_a_proved_certificate_is_answered_as_verify_peer_does(
    ca: pki.CAMaterial, csr: bytes
) -> None:
    pem, issued = pki.issue_user_cert(ca, csr, "ann")
    verifier = pki.PeerVerifier()
    at = datetime.now(UTC)
    first = verifier.verify(_der(pem), [ca], at=at)
    assert first == pki.verify_peer(_der(pem), [ca], at=at)
    assert verifier.verify(_der(pem), [ca], at=at) == first
    assert first.serial == issued.serial


def test_a_ca_no_longer_trusted_refuses_a_proved_certificate(
    ca: pki.CAMaterial, other_ca: pki.CAMaterial, csr: bytes
) -> None:
    pem, _ = pki.issue_user_cert(ca, csr, "ann")
    verifier = pki.PeerVerifier()
    at = datetime.now(UTC)
    verifier.verify(_der(pem), [other_ca, ca], at=at)
    assert _reason(verifier, _der(pem), [other_ca], at) == "foreign_ca"


def test_a_proved_certificate_expires_and_is_not_valid_before_its_time(
    ca: pki.CAMaterial, csr: bytes
) -> None:
    pem, issued = pki.issue_user_cert(ca, csr, "ann")
    verifier = pki.PeerVerifier()
    verifier.verify(_der(pem), [ca], at=datetime.now(UTC))
    later = issued.not_after + timedelta(seconds=1)
    assert _reason(verifier, _der(pem), [ca], later) == "expired"
    assert _reason(verifier, _der(pem), [ca], datetime(2000, 1, 1, tzinfo=UTC)) == "not_yet_valid"


def test_only_size_certificates_are_remembered(ca: pki.CAMaterial) -> None:
    verifier = pki.PeerVerifier(size=2)
    at = datetime.now(UTC)
    ders = [
        _der(pki.issue_user_cert(ca, pki.make_csr(pki.generate_key(), "u"), f"u{i}")[0])
        for i in range(3)
    ]
    for der in ders:
        verifier.verify(der, [ca], at=at)
    assert list(verifier._seen) == ders[1:]
