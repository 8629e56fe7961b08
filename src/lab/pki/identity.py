"""Who is on the other end: identities from peer certificates, verification, displays, CRLs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

from attrs import frozen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.errors import Invalid, Unauthenticated
from lab.pki.ca import CACert, CAMaterial, _common_name, fingerprint_der
from lab.pki.profiles import NAME_RE

PeerKind = Literal["server", "user", "bastion", "replica"]
PEER_KINDS: tuple[PeerKind, ...] = ("server", "user", "bastion", "replica")


@frozen(kw_only=True)
class PeerIdentity:
    """The identity a client certificate proves. ``kind/name`` is its common name."""

    kind: PeerKind
    name: str
    serial: str  # lowercase hex, as in IssuedCert.serial
    not_after: datetime
    issuer_fingerprint: str  # "" when the issuing CA is not among those we were given
    fingerprint: str

    @property
    def subject(self) -> str:
        return f"{self.kind}/{self.name}"


@frozen(kw_only=True)
class CertInfo:
    """A certificate summarised for displays (``labctl auth whoami``, ``describe``)."""

    subject: str
    serial: str
    not_before: datetime
    not_after: datetime
    fingerprint: str


def _unauthenticated(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(message, details={"reason": reason})


def _load_der(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise _unauthenticated("malformed", "client certificate cannot be parsed") from exc


def _find_issuer(cert: x509.Certificate, cas: Iterable[CAMaterial | CACert]) -> CACert | None:
    """The CA among ``cas`` whose name matches and whose key verifies the signature."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return CACert(ca.cert)
    return None


def single_common_name(subject: x509.Name) -> str | None:
    """The subject's common name if the subject is exactly one RDN holding exactly one
    attribute, a CN (what every profile issues); None otherwise."""
    rdns = subject.rdns
    if len(rdns) != 1 or len(rdns[0]) != 1:
        return None
    [attribute] = list(rdns[0])
    if attribute.oid != NameOID.COMMON_NAME or not isinstance(attribute.value, str):
        return None
    return attribute.value


def _identity(cert: x509.Certificate, issuer_fingerprint: str) -> PeerIdentity:
    cn = single_common_name(cert.subject)
    if cn is None:
        raise _unauthenticated(
            "malformed",
            f"certificate subject {cert.subject.rfc4514_string()!r} is not exactly one CN",
        )
    kind, sep, name = cn.partition("/")
    if not sep or kind not in PEER_KINDS or not NAME_RE.fullmatch(name):
        raise _unauthenticated("malformed", f"certificate subject {cn!r} is not a labctl identity")
    return PeerIdentity(
        kind=kind,
        name=name,
        serial=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc,
        issuer_fingerprint=issuer_fingerprint,
        fingerprint=fingerprint_der(cert.public_bytes(serialization.Encoding.DER)),
    )


def identity_from_der(der: bytes, trusted_cas: Iterable[CAMaterial | CACert] = ()) -> PeerIdentity:
    """Read the identity from a DER certificate **without** checking trust or validity.

    Use it only on a certificate the TLS layer already verified against our CA bundle; use
    :func:`verify_peer` otherwise. ``issuer_fingerprint`` is filled when one of
    ``trusted_cas`` signed the certificate. Raises :class:`Unauthenticated` (reason
    ``malformed``) when the certificate does not parse or its subject is not ``kind/name``.
    """
    cert = _load_der(der)
    issuer = _find_issuer(cert, trusted_cas)
    return _identity(cert, issuer.fingerprint() if issuer else "")


def verify_peer(
    der: bytes, trusted_cas: Sequence[CAMaterial | CACert], *, at: datetime
) -> PeerIdentity:
    """Check that ``der`` is a client certificate one of our CAs issued, valid at ``at``.

    Raises :class:`Unauthenticated` with ``details["reason"]`` one of ``malformed`` (does not
    parse, or the subject is not a labctl identity), ``foreign_ca`` (no trusted CA signed
    it), ``expired``, ``not_yet_valid`` (for the certificate or its CA) and ``wrong_usage``
    (no clientAuth extended key usage). Revocation is not checked here: it is a database
    lookup by serial, done by the caller.
    """
    return _verify_peer(der, trusted_cas, at)[0]


def _verify_peer(
    der: bytes, trusted_cas: Sequence[CAMaterial | CACert], at: datetime
) -> tuple[PeerIdentity, datetime, datetime]:
    """:func:`verify_peer`, and the times between which the answer holds (both the client's
    and its CA's validity)."""
    if at.tzinfo is None:
        raise ValueError("verify_peer needs a timezone-aware time")
    cert = _load_der(der)
    issuer = _find_issuer(cert, trusted_cas)
    if issuer is None:
        raise _unauthenticated("foreign_ca", "client certificate was not issued by a trusted CA")
    for who, c in (("client", cert), ("CA", issuer.cert)):
        if at < c.not_valid_before_utc:
            raise _unauthenticated("not_yet_valid", f"{who} certificate is not yet valid")
        if at > c.not_valid_after_utc:
            raise _unauthenticated("expired", f"{who} certificate has expired")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    except ValueError as exc:
        raise _unauthenticated("malformed", "client certificate has broken extensions") from exc
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise _unauthenticated("wrong_usage", "certificate is not for client authentication")
    start = max(cert.not_valid_before_utc, issuer.cert.not_valid_before_utc)
    end = min(cert.not_valid_after_utc, issuer.cert.not_valid_after_utc)
    return _identity(cert, issuer.fingerprint()), start, end


class PeerVerifier:
    """:func:`verify_peer` that remembers what it proved: a certificate seen before is not
    parsed and its signature not checked again while the trusted CAs are the very same objects
    (a CA rotation or its finish changes them) and ``at`` lies within both validity windows;
    anything else is verified afresh (and refused with the same reasons). Revocation stays
    the caller's check, at every request. At most ``size`` certificates are remembered."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: dict[bytes, tuple[tuple[object, ...], PeerIdentity, datetime, datetime]] = {}

    def verify(
        self, der: bytes, trusted_cas: Sequence[CAMaterial | CACert], *, at: datetime
    ) -> PeerIdentity:
        hit = self._seen.get(der)
        if hit is not None:
            cas, ident, start, end = hit
            same = len(cas) == len(trusted_cas) and all(
                a is b for a, b in zip(cas, trusted_cas, strict=True)
            )
            if same and start <= at <= end:
                return ident
        ident, start, end = _verify_peer(der, trusted_cas, at)
        self._seen.pop(der, None)
        self._seen[der] = (tuple(trusted_cas), ident, start, end)
        while len(self._seen) > self.size:
            del self._seen[next(iter(self._seen))]
        return ident


def cert_info(cert_pem: bytes) -> CertInfo:
    """Summarise a PEM certificate; raises :class:`Invalid` if it does not parse."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise Invalid(
            f"not a valid PEM certificate: {exc}",
            details={"fields": ["certificate"], "reason": "malformed"},
        ) from exc
    return CertInfo(
        subject=_common_name(cert.subject) or cert.subject.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint_der(cert.public_bytes(serialization.Encoding.DER)),
    )


def build_crl(
    ca: CAMaterial,
    revoked: Iterable[tuple[str, datetime]],
    *,
    next_update: datetime,
    now: datetime | None = None,
    crl_number: int | None = None,
) -> bytes:
    """A PEM CRL signed by ``ca`` listing ``revoked`` as ``(serial_hex, revoked_at)`` pairs.

    ``crl_number`` must grow with every CRL of this CA; by default it is the current time in
    milliseconds, which does. Raises :class:`Invalid` for a serial that is not hex.
    """
    now = now or datetime.now(UTC)
    if next_update <= now:
        raise Invalid(
            "CRL next_update must be in the future",
            details={"fields": ["next_update"], "reason": "in_past"},
        )
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(next_update)
        .add_extension(
            x509.CRLNumber(crl_number if crl_number is not None else int(now.timestamp() * 1000)),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    for serial_hex, revoked_at in revoked:
        try:
            serial = int(serial_hex, 16)
        except ValueError:
            raise Invalid(
                f"serial {serial_hex!r} is not hexadecimal",
                details={"fields": ["revoked"], "reason": "bad_serial"},
            ) from None
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def crl_serials(crl_pem: bytes, ca: CAMaterial | CACert) -> set[str]:
    """The revoked serials (lowercase hex) of a PEM CRL, after checking ``ca`` signed it.

    Raises :class:`Invalid` when the CRL does not parse or its signature does not verify.
    """
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as exc:
        raise Invalid(
            f"not a valid PEM CRL: {exc}", details={"fields": ["crl"], "reason": "malformed"}
        ) from exc
    if crl.issuer != ca.cert.subject or not crl.is_signature_valid(ca.cert.public_key()):  # type: ignore[arg-type]
        raise Invalid(
            "CRL is not signed by this CA",
            details={"fields": ["crl"], "reason": "bad_signature"},
        )
    return {format(r.serial_number, "x") for r in crl}
