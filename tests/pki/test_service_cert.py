"""Service certificates for apps (CockroachDB's node and root): issued by labd's CA, never a
labd identity (no "/" in the CN), wildcard SANs allowed."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from lab import pki
from lab.errors import Invalid, Unauthenticated
from lab.pki.identity import identity_from_der


def test_a_node_certificate_has_both_usages_and_wildcards() -> None:
    ca = pki.create_ca("test CA")
    key = pki.generate_key()
    pem, issued = pki.issue_service_cert(
        ca, pki.make_csr(key, "x"), "node", ["localhost", "*.crdb.db"], server=True, client=True
    )
    cert = x509.load_pem_x509_certificate(pem)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "*.crdb.db"]
    assert issued.profile == "service" and issued.subject == "node"
    # A client-only certificate needs no name.
    root, _ = pki.issue_service_cert(ca, pki.make_csr(key, "x"), "root", client=True, server=False)
    assert x509.load_pem_x509_certificate(root).subject.rfc4514_string() == "CN=root"


@pytest.mark.parametrize(
    ("cn", "hosts", "message"),
    [
        ("user/admin", ["a"], "no '/'"),
        ("server/web1", ["a"], "no '/'"),
        ("node", [], "needs at least one hostname"),
        ("node", ["bad host"], "not a valid DNS name"),
    ],
)
def test_refused(cn: str, hosts: list[str], message: str) -> None:
    ca = pki.create_ca("test CA")
    with pytest.raises(Invalid, match=message):
        pki.issue_service_cert(ca, pki.make_csr(pki.generate_key(), "x"), cn, hosts)


def test_a_service_certificate_is_not_a_labd_identity() -> None:
    ca = pki.create_ca("test CA")
    pem, _ = pki.issue_service_cert(
        ca, pki.make_csr(pki.generate_key(), "x"), "root", client=True, server=False
    )
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    with pytest.raises(Unauthenticated, match="not a labctl identity"):
        identity_from_der(der, [ca])
