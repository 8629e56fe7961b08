"""The audit key: MACs the audit chain and seeds the checkpoint signing key. Never stored in
the database.

Where it comes from, first match wins:

1. ``LABD_AUDIT_KEY`` (set and non-empty): its UTF-8 bytes, stretched with scrypt. Give every
   replica of a cluster the same value, e.g. from the same Kubernetes Secret.
2. Otherwise the CA passphrase (``LABD_CA_PASSPHRASE`` or the ``ca-passphrase`` key file in the
   data dir), stretched with scrypt under a label of its own. Replicas already share the CA
   passphrase, so they share this key with no extra setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from attrs import frozen

from lab import pki
from lab.store import AuditKey

AUDIT_KEY_ENV = "LABD_AUDIT_KEY"
_SIGNING_LABEL = b"checkpoint signing key"


@frozen
class AuditKeys:
    """The audit key and the Ed25519 key that signs checkpoints, derived from it."""

    chain: AuditKey
    signer: pki.Signer

    @property
    def key_id(self) -> str:
        return self.chain.key_id


def audit_keys(ca_passphrase: bytes, environ: Mapping[str, str] | None = None) -> AuditKeys:
    """Resolve the audit key (see the module docstring); tens of milliseconds (scrypt)."""
    env = os.environ if environ is None else environ
    explicit = env.get(AUDIT_KEY_ENV, "")
    secret = explicit.encode("utf-8") if explicit else b"labctl-audit\x00" + ca_passphrase
    key = AuditKey(pki.derive_audit_secret(secret))
    return AuditKeys(chain=key, signer=pki.Signer(key.derive(_SIGNING_LABEL)))
