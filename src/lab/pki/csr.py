"""Certificate signing requests: client-side creation and server-side vetting.

Only the public key of a CSR is ever used. Its subject, extensions and attributes are ignored:
labd decides names, usages and lifetimes from the enrollment token and the profile.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from lab.errors import Invalid

MAX_CSR_BYTES = 16 * 1024
MIN_RSA_BITS = 2048

# The key types a certificate may carry. P-256/P-384 and Ed25519 are what our clients make;
# RSA stays accepted for operators bringing keys from elsewhere.
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


def _reject(reason: str, message: str) -> Invalid:
    return Invalid(f"csr: {message}", details={"fields": ["csr"], "reason": reason})


@frozen(kw_only=True)
class CSRInfo:
    """What we learned from a CSR. ``requested_subject`` is informational, never trusted."""

    key_type: str
    public_key_pem: bytes
    requested_subject: str
    public_key: Any  # one of PublicKey; Any keeps cryptography types out of callers' signatures


def _key_type(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ec-p256"
        if isinstance(key.curve, ec.SECP384R1):
            return "ec-p384"
        raise _reject("unsupported_key", f"EC curve {key.curve.name} is not accepted")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise _reject(
                "weak_key", f"RSA key of {key.key_size} bits is too weak (minimum {MIN_RSA_BITS})"
            )
        return f"rsa-{key.key_size}"
    raise _reject("unsupported_key", f"key type {type(key).__name__} is not accepted")


def parse_csr(pem: bytes | str) -> CSRInfo:
    """Parse and vet a PEM CSR.

    Accepts EC P-256/P-384, Ed25519 and RSA >= 2048 bits, with a valid self-signature. Raises
    :class:`lab.errors.Invalid` with ``details={"fields": ["csr"], "reason": R}`` where R is
    one of ``too_large``, ``malformed``, ``bad_signature``, ``weak_key``, ``unsupported_key``.
    """
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if len(data) > MAX_CSR_BYTES:
        raise _reject("too_large", f"larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(data)
        key = csr.public_key()
    except (ValueError, TypeError) as exc:
        raise _reject("malformed", f"not a valid PEM certificate request ({exc})") from exc
    except x509.UnsupportedGeneralNameType as exc:  # pragma: no cover - exotic CSR content
        raise _reject("malformed", str(exc)) from exc
    key_type = _key_type(key)
    try:
        signed = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise _reject("bad_signature", f"signature cannot be checked ({exc})") from exc
    if not signed:
        raise _reject("bad_signature", "signature does not match its public key")
    try:
        subject = csr.subject.rfc4514_string()
    except ValueError:
        subject = ""
    return CSRInfo(
        key_type=key_type,
        public_key_pem=key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        requested_subject=subject,
        public_key=key,
    )


def generate_key() -> bytes:
    """A new EC P-256 private key as unencrypted PKCS#8 PEM (for agents and the CLI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key_pem: bytes, common_name: str) -> bytes:
    """A PEM CSR for ``key_pem`` with subject ``CN=common_name``.

    The common name is a courtesy for logs; labd sets the real subject from the profile.
    Raises :class:`lab.errors.Invalid` when the key cannot be loaded or is not a usable type.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise Invalid(
            f"private key is not a valid unencrypted PEM key: {exc}",
            details={"fields": ["key"], "reason": "malformed"},
        ) from exc
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        csr = builder.sign(key, None)
    elif isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        csr = builder.sign(key, hashes.SHA256())
    else:
        raise Invalid(
            f"key type {type(key).__name__} is not accepted",
            details={"fields": ["key"], "reason": "unsupported_key"},
        )
    return csr.public_bytes(serialization.Encoding.PEM)
