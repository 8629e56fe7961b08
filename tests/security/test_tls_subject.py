"""A certificate our CA signed but whose subject is not exactly one CN of a profile's form is
refused: not read "by its first CN" (it used to log in as that CN)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import pki
from lab.errors import Unauthenticated
from tests.hub.hubtools import labd_with_hub


def forged(ca: pki.CAMaterial, names: list[x509.RelativeDistinguishedName]) -> tuple[bytes, bytes]:
    """A clientAuth leaf signed by ``ca`` with the given subject RDNs: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def cn(value: str) -> x509.NameAttribute[str]:
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


RDN = x509.RelativeDistinguishedName
SUBJECTS = {
    "two-cns": [RDN([cn("user/admin")]), RDN([cn("user/nobody")])],
    "cn-and-o": [
        RDN([cn("user/admin")]),
        RDN([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]),
    ],
    "multi-valued-rdn": [RDN([cn("user/admin"), x509.NameAttribute(NameOID.USER_ID, "x")])],
    "not-a-profile": [RDN([cn("labd/admin")])],
    "odd-name": [RDN([cn("user/admin nobody")])],
}

# A subject that is not exactly one CN is refused by the TLS layer; one CN that is not of a
# profile's form is refused by the request's authentication (401, reason malformed).
REFUSED_AT_HANDSHAKE = {"two-cns", "cn-and-o", "multi-valued-rdn"}


@pytest.mark.parametrize("kind", sorted(SUBJECTS))
async def test_a_ca_signed_certificate_with_a_bad_subject_is_refused(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            running = labd.running
            admin = await running.admin()  # a real user/admin exists and is an admin
            signer = labd.context.ca.signer
            cert_pem, key_pem = forged(signer, SUBJECTS[kind])
            der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
            with pytest.raises(Unauthenticated) as refused:
                pki.verify_peer(der, [signer], at=datetime.now(UTC))
            assert refused.value.details["reason"] == "malformed"

            context = pki.client_ssl_context(running.ca_pem(), cert_pem=cert_pem, key_pem=key_pem)
            async with httpx.AsyncClient(base_url=running.url, verify=context, timeout=15) as http:
                if kind in REFUSED_AT_HANDSHAKE:
                    # Not one CN: the TLS layer drops it before any request is read, and says
                    # why in labd's log.
                    with pytest.raises(httpx.RemoteProtocolError):
                        await http.get("/api/auth/whoami")
                    assert any(
                        "TLS handshake from 127.0.0.1 failed: client certificate subject"
                        in record.getMessage()
                        for record in caplog.records
                    ), caplog.text
                else:
                    resp = await http.get("/api/auth/whoami")
                    assert resp.status_code == 401, resp.text
                    assert resp.json()["error"]["details"]["reason"] == "malformed"
            async with running.client(admin) as http:
                assert (await http.get("/api/auth/whoami")).status_code == 200
