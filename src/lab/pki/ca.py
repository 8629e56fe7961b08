"""The built-in certificate authority: creating, loading and exporting its material.

A CA is an EC P-256 key plus a self-signed root certificate. :class:`CAMaterial` holds both
(it can sign); :class:`CACert` holds only the certificate (it can verify). Fingerprints are
``"SHA256:" + lowercase hex`` (64 digits, no separators) of the certificate's DER encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.errors import ConfigError, Invalid
from lab.pki.keystore import decrypt_private_key, encrypt_private_key

CA_LIFETIME = timedelta(days=3650)

# Certificates are backdated a little so a peer whose clock runs slightly behind ours does not
# see a freshly issued certificate as "not yet valid".
CLOCK_SKEW = timedelta(minutes=5)


def fingerprint_der(der: bytes) -> str:
    """The labctl fingerprint of a DER certificate: ``SHA256:<64 lowercase hex digits>``."""
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def _fingerprint(cert: x509.Certificate) -> str:
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


@frozen
class CACert:
    """A CA certificate without its key: what a verifier needs (replicas, agents, CLI)."""

    cert: x509.Certificate

    @classmethod
    def from_pem(cls, pem: bytes) -> CACert:
        """Load one CA certificate; raises :class:`ConfigError` if it is not a usable CA."""
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise ConfigError(f"CA certificate is not a valid PEM certificate: {exc}") from exc
        _check_is_ca(cert)
        return cls(cert)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def common_name(self) -> str:
        return _common_name(self.cert.subject)

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def fingerprint(self) -> str:
        return _fingerprint(self.cert)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


@frozen
class CAMaterial:
    """A CA certificate with its private key: what labd needs to sign certificates and CRLs."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CAMaterial:
        """Load a CA from its PEM certificate and *unencrypted* PEM private key.

        Raises :class:`ConfigError` when either does not parse, the certificate is not a CA,
        or the key does not belong to the certificate. To load an encrypted key, decrypt it
        first with :func:`lab.pki.decrypt_private_key`.
        """
        ca_cert = CACert.from_pem(cert_pem)
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"CA private key is not a valid PEM key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("CA private key is not an EC key")
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        if key.public_key().public_bytes(enc, pub) != ca_cert.cert.public_key().public_bytes(
            enc, pub
        ):
            raise ConfigError("CA private key does not match the CA certificate")
        return cls(ca_cert.cert, key)

    @classmethod
    def from_encrypted(cls, cert_pem: bytes, key_blob: bytes, passphrase: bytes) -> CAMaterial:
        """Load a CA whose key was stored with :meth:`encrypted_key_blob`.

        Raises :class:`lab.pki.WrongPassphrase` for a wrong passphrase and
        :class:`ConfigError` for anything else unusable.
        """
        return cls.from_pem(cert_pem, decrypt_private_key(key_blob, passphrase))

    def encrypted_key_blob(self, passphrase: bytes) -> bytes:
        """The private key encrypted for storage (see :func:`lab.pki.encrypt_private_key`)."""
        return encrypt_private_key(self.key_pem(), passphrase)

    @property
    def ca_cert(self) -> CACert:
        return CACert(self.cert)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def fingerprint(self) -> str:
        return _fingerprint(self.cert)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM. Encrypt it before it touches storage."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _check_is_ca(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise ConfigError("certificate is not a CA (no BasicConstraints)") from None
    if not bc.ca:
        raise ConfigError("certificate is not a CA (BasicConstraints CA is false)")


def create_ca(
    common_name: str, *, lifetime: timedelta = CA_LIFETIME, now: datetime | None = None
) -> CAMaterial:
    """Create a new root CA: EC P-256, self-signed, valid ``lifetime`` (10 years by default).

    The certificate carries BasicConstraints CA (critical, path length 0: it signs only leaf
    certificates), KeyUsage keyCertSign + cRLSign (critical) and a subject key identifier
    (the authority key identifier of a self-signed root is the same).
    """
    if not common_name or len(common_name) > 64:
        raise Invalid(
            "CA common name must be 1 to 64 characters",
            details={"fields": ["common_name"], "reason": "length"},
        )
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return CAMaterial(cert, key)


def ca_bundle_pem(cas: Iterable[CAMaterial | CACert]) -> bytes:
    """Concatenate CA certificates into one PEM bundle (dual trust during a CA rotation).

    Duplicates (same fingerprint) are written once; order is kept (put the current CA first).
    """
    seen: set[str] = set()
    parts: list[bytes] = []
    for ca in cas:
        fp = ca.fingerprint()
        if fp not in seen:
            seen.add(fp)
            parts.append(ca.cert_pem())
    return b"".join(parts)


def load_ca_bundle(pem: bytes) -> list[CACert]:
    """Parse a PEM bundle of CA certificates; raises :class:`ConfigError` if it holds none."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"CA bundle is not valid PEM: {exc}") from exc
    out = []
    for cert in certs:
        _check_is_ca(cert)
        out.append(CACert(cert))
    return out
