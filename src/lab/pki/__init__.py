"""labctl's built-in CA and TLS plumbing (DESIGN §5).

The only package that imports ``cryptography.hazmat`` / ``cryptography.x509``. Everything a
daemon or the CLI needs is re-exported here; see ``docs/pki.md`` for the user-facing parts.
"""

from lab.pki.ca import (
    CA_LIFETIME,
    CACert,
    CAMaterial,
    ca_bundle_pem,
    create_ca,
    fingerprint_der,
    load_ca_bundle,
)
from lab.pki.csr import CSRInfo, generate_key, make_csr, parse_csr
from lab.pki.identity import (
    PEER_KINDS,
    CertInfo,
    PeerIdentity,
    PeerKind,
    build_crl,
    cert_info,
    crl_serials,
    identity_from_der,
    verify_peer,
)
from lab.pki.keystore import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE,
    WrongPassphrase,
    decrypt_private_key,
    encrypt_private_key,
    load_or_create_keyfile,
    resolve_ca_passphrase,
)
from lab.pki.profiles import (
    AGENT_LIFETIME,
    BASTION_LIFETIME,
    REPLICA_LIFETIME,
    SERVER_LIFETIME,
    USER_LIFETIME,
    IssuedCert,
    issue_agent_cert,
    issue_bastion_cert,
    issue_replica_cert,
    issue_server_cert,
    issue_user_cert,
)
from lab.pki.sealing import SEAL_LABEL, seal, unseal
from lab.pki.signing import Signer, derive_audit_secret, signature_holds
from lab.pki.tls import ClientAuth, client_ssl_context, load_cert_chain, server_ssl_context

__all__ = [
    "AGENT_LIFETIME",
    "BASTION_LIFETIME",
    "CA_LIFETIME",
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE",
    "PEER_KINDS",
    "REPLICA_LIFETIME",
    "SEAL_LABEL",
    "SERVER_LIFETIME",
    "USER_LIFETIME",
    "CACert",
    "CAMaterial",
    "CSRInfo",
    "CertInfo",
    "ClientAuth",
    "IssuedCert",
    "PeerIdentity",
    "PeerKind",
    "Signer",
    "WrongPassphrase",
    "build_crl",
    "ca_bundle_pem",
    "cert_info",
    "client_ssl_context",
    "create_ca",
    "crl_serials",
    "decrypt_private_key",
    "derive_audit_secret",
    "encrypt_private_key",
    "fingerprint_der",
    "generate_key",
    "identity_from_der",
    "issue_agent_cert",
    "issue_bastion_cert",
    "issue_replica_cert",
    "issue_server_cert",
    "issue_user_cert",
    "load_ca_bundle",
    "load_cert_chain",
    "load_or_create_keyfile",
    "make_csr",
    "parse_csr",
    "resolve_ca_passphrase",
    "seal",
    "server_ssl_context",
    "signature_holds",
    "unseal",
    "verify_peer",
]
