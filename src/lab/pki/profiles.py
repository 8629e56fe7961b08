"""Certificate profiles: one function per kind of certificate labd issues.

Every profile signs only the CSR's public key; the subject is ``CN=<kind>/<name>``, chosen here.
Leaf certificates carry BasicConstraints CA=false, KeyUsage digitalSignature (plus
keyEncipherment for RSA keys), the profile's extended key usages, SKI and AKI. Serials are
random 159-bit integers, written as lowercase hex without leading zeros.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.errors import Invalid
from lab.model import Certificate
from lab.pki.ca import CLOCK_SKEW, CAMaterial, fingerprint_der
from lab.pki.csr import CSRInfo, parse_csr

AGENT_LIFETIME = timedelta(days=30)
USER_LIFETIME = timedelta(days=90)
SERVER_LIFETIME = timedelta(days=365)
BASTION_LIFETIME = timedelta(days=365)
REPLICA_LIFETIME = timedelta(days=90)
SERVICE_LIFETIME = timedelta(days=365)

DEFAULT_SERVER_HOSTNAMES = ("localhost",)
DEFAULT_SERVER_IPS = ("127.0.0.1", "::1")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# A service's CN has no "/": labd's identities are "kind/name", so a service certificate can
# never authenticate to labd, whatever its usages.
SERVICE_CN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

IPLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address


@frozen(kw_only=True)
class IssuedCert:
    """What labd records about a certificate it signed."""

    serial: str  # lowercase hex, no leading zeros
    subject: str  # the common name, e.g. "server/web1"
    profile: str  # "agent" | "user" | "server" | "bastion" | "replica"
    not_before: datetime
    not_after: datetime
    fingerprint: str  # of the issued certificate
    issuer_fingerprint: str  # of the CA that signed it

    def to_record(self) -> Certificate:
        """The :class:`lab.model.Certificate` row for the certificate repository."""
        return Certificate(
            serial=self.serial,
            subject=self.subject,
            profile=self.profile,
            not_before=self.not_before,
            not_after=self.not_after,
            issuer_fingerprint=self.issuer_fingerprint,
        )


def _check_name(value: str, field: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise Invalid(
            f"{field} {value!r} must be 1-128 characters of letters, digits, '.', '_', '@', '-' "
            "and start with a letter or digit",
            details={"fields": [field], "reason": "bad_name"},
        )
    return value


def _check_hostname(value: str) -> str:
    host = value.rstrip(".").lower()
    if not host or len(host) > 253 or not all(_DNS_LABEL_RE.fullmatch(p) for p in host.split(".")):
        raise Invalid(
            f"hostname {value!r} is not a valid DNS name",
            details={"fields": ["hostnames"], "reason": "bad_hostname"},
        )
    return host


def _check_ip(value: IPLike) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(
            f"{value!r} is not an IP address", details={"fields": ["ips"], "reason": "bad_ip"}
        ) from None


def _sans(hostnames: Iterable[str], ips: Iterable[IPLike]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(_check_hostname(h) for h in hostnames):
        names.append(x509.DNSName(host))
    for ip in dict.fromkeys(_check_ip(i) for i in ips):
        names.append(x509.IPAddress(ip))
    if not names:
        raise Invalid(
            "a server certificate needs at least one hostname or IP address",
            details={"fields": ["hostnames", "ips"], "reason": "no_names"},
        )
    return names


def _issue(
    ca: CAMaterial,
    csr_pem: bytes | CSRInfo,
    *,
    common_name: str,
    profile: str,
    usages: Sequence[x509.ObjectIdentifier],
    lifetime: timedelta,
    sans: list[x509.GeneralName] | None,
    now: datetime | None,
) -> tuple[bytes, IssuedCert]:
    if lifetime <= timedelta(0):
        raise Invalid(
            "certificate lifetime must be positive",
            details={"fields": ["lifetime"], "reason": "not_positive"},
        )
    # A CSR the caller already vetted is not parsed and verified a second time.
    info = csr_pem if isinstance(csr_pem, CSRInfo) else parse_csr(csr_pem)
    public_key = info.public_key
    now = now or datetime.now(UTC)
    not_before = now - CLOCK_SKEW
    # A leaf must not outlive the CA that vouches for it.
    not_after = min(now + lifetime, ca.not_after)
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    if sans:
        # Critical only when the subject carries no DNS-usable name (RFC 5280 4.2.1.6); our
        # CNs are "kind/name", so clients must use the SANs.
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    issued = IssuedCert(
        serial=format(cert.serial_number, "x"),
        subject=common_name,
        profile=profile,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint_der(der),
        issuer_fingerprint=ca.fingerprint(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), issued


_CLIENT = (ExtendedKeyUsageOID.CLIENT_AUTH,)
_SERVER = (ExtendedKeyUsageOID.SERVER_AUTH,)
_BOTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


def issue_agent_cert(
    ca: CAMaterial,
    csr_pem: bytes | CSRInfo,
    server_name: str,
    *,
    lifetime: timedelta = AGENT_LIFETIME,
    now: datetime | None = None,
) -> tuple[bytes, IssuedCert]:
    """A node agent's client certificate: ``CN=server/<server_name>``, EKU clientAuth."""
    name = _check_name(server_name, "server_name")
    return _issue(
        ca,
        csr_pem,
        common_name=f"server/{name}",
        profile="agent",
        usages=_CLIENT,
        lifetime=lifetime,
        sans=None,
        now=now,
    )


def issue_user_cert(
    ca: CAMaterial,
    csr_pem: bytes | CSRInfo,
    username: str,
    *,
    lifetime: timedelta = USER_LIFETIME,
    now: datetime | None = None,
) -> tuple[bytes, IssuedCert]:
    """An operator's client certificate: ``CN=user/<username>``, EKU clientAuth."""
    name = _check_name(username, "username")
    return _issue(
        ca,
        csr_pem,
        common_name=f"user/{name}",
        profile="user",
        usages=_CLIENT,
        lifetime=lifetime,
        sans=None,
        now=now,
    )


def issue_server_cert(
    ca: CAMaterial,
    csr_pem: bytes | CSRInfo,
    hostnames: Iterable[str] = DEFAULT_SERVER_HOSTNAMES,
    ips: Iterable[IPLike] = DEFAULT_SERVER_IPS,
    *,
    lifetime: timedelta = SERVER_LIFETIME,
    now: datetime | None = None,
) -> tuple[bytes, IssuedCert]:
    """labd's TLS server certificate: EKU serverAuth, SANs from ``hostnames`` and ``ips``.

    The common name is ``labd/<first hostname or IP>`` (clients match on SANs only).
    """
    sans = _sans(hostnames, ips)
    first = sans[0].value
    return _issue(
        ca,
        csr_pem,
        common_name=f"labd/{first}",
        profile="server",
        usages=_SERVER,
        lifetime=lifetime,
        sans=sans,
        now=now,
    )


def issue_service_cert(
    ca: CAMaterial,
    csr_pem: bytes,
    common_name: str,
    hostnames: Iterable[str] = (),
    *,
    server: bool = True,
    client: bool = False,
    lifetime: timedelta = SERVICE_LIFETIME,
    now: datetime | None = None,
) -> tuple[bytes, IssuedCert]:
    """A certificate for a service an app runs (CockroachDB's ``node`` and ``root``, say):
    ``CN=<common_name>`` (no ``/``, so never a labd identity), serverAuth and/or clientAuth,
    DNS SANs from ``hostnames`` (a leading ``*.`` label is a wildcard)."""
    if not SERVICE_CN_RE.fullmatch(common_name):
        raise Invalid(
            f"common name {common_name!r} must be letters, digits, '.', '_', '-' (no '/')",
            details={"fields": ["common_name"], "reason": "bad_name"},
        )
    usages = (_SERVER if server else ()) + (_CLIENT if client else ())
    if not usages:
        raise Invalid("a certificate needs server or client usage", details={"fields": ["usage"]})
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        wildcard = host.startswith("*.")
        checked = _check_hostname(host[2:] if wildcard else host)
        sans.append(x509.DNSName(f"*.{checked}" if wildcard else checked))
    if server and not sans:
        raise Invalid(
            "a server certificate needs at least one hostname",
            details={"fields": ["hostnames"], "reason": "no_names"},
        )
    return _issue(
        ca,
        csr_pem,
        common_name=common_name,
        profile="service",
        usages=usages,
        lifetime=lifetime,
        sans=sans or None,
        now=now,
    )


def issue_bastion_cert(
    ca: CAMaterial,
    csr_pem: bytes | CSRInfo,
    bastion_name: str,
    hostnames: Iterable[str] = (),
    ips: Iterable[IPLike] = (),
    *,
    lifetime: timedelta = BASTION_LIFETIME,
    now: datetime | None = None,
) -> tuple[bytes, IssuedCert]:
    """A bastion's certificate: ``CN=bastion/<name>``, EKU serverAuth + clientAuth.

    SANs are added when ``hostnames`` or ``ips`` are given (so the bastion can serve TLS).
    """
    name = _check_name(bastion_name, "bastion_name")
    hostnames, ips = list(hostnames), list(ips)
    return _issue(
        ca,
        csr_pem,
        common_name=f"bastion/{name}",
        profile="bastion",
        usages=_BOTH,
        lifetime=lifetime,
        sans=_sans(hostnames, ips) if hostnames or ips else None,
        now=now,
    )


def issue_replica_cert(
    ca: CAMaterial,
    csr_pem: bytes | CSRInfo,
    replica_id: str,
    hostnames: Iterable[str] = DEFAULT_SERVER_HOSTNAMES,
    ips: Iterable[IPLike] = DEFAULT_SERVER_IPS,
    *,
    lifetime: timedelta = REPLICA_LIFETIME,
    now: datetime | None = None,
) -> tuple[bytes, IssuedCert]:
    """A labd replica's certificate for replica-to-replica forwarding (cluster mode).

    ``CN=replica/<replica_id>``, EKU serverAuth + clientAuth, SANs from hostnames and ips.
    """
    name = _check_name(replica_id, "replica_id")
    return _issue(
        ca,
        csr_pem,
        common_name=f"replica/{name}",
        profile="replica",
        usages=_BOTH,
        lifetime=lifetime,
        sans=_sans(hostnames, ips),
        now=now,
    )
