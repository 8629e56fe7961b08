"""labd's certificate authority: stored encrypted in the database, loaded at start, rotated.

The CA set lives in the settings repository under ``ca`` as JSON (so every replica sharing the
database can sign): a list of CAs, each ``{"cert": PEM, "key": base64(encrypted key)}``, the
index of the one that signs new certificates and the index of the one that signs labd's own
server certificate. Private keys are encrypted with AES-256-GCM under a scrypt key derived from
``LABD_CA_PASSPHRASE`` or the key file in the data dir; they never reach storage in clear.

Rotation: ``rotate()`` adds a new CA that signs every new certificate while the old one stays
trusted (dual-trust bundle); identities renew onto the new CA; ``finish()`` drops the old CA
once none is pending (or when forced) and moves labd's server certificate to the new CA.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attrs import define, field

from lab import pki
from lab.errors import Conflict
from lab.store import Store

log = logging.getLogger(__name__)

SETTINGS_KEY = "ca"


@define
class CAState:
    cas: list[pki.CAMaterial]
    signer: int = 0
    server_issuer: int = 0

    @property
    def rotating(self) -> bool:
        return len(self.cas) > 1


@define
class CAService:
    """The CA material of this labd and the TLS context built from it."""

    store: Store
    passphrase: bytes
    server_names: Sequence[str] = ()
    state: CAState = field(init=False)
    server_context: ssl.SSLContext | None = field(init=False, default=None)

    async def load(self) -> None:
        """Load the CA set, creating it on first start (first writer wins among replicas).

        Raises ``WrongPassphrase`` when the stored keys cannot be decrypted; nothing is changed.
        """
        stored = await self.store.settings.get(SETTINGS_KEY)
        if stored is None:
            ca = pki.create_ca("labctl CA")
            fresh = self._encode(CAState(cas=[ca]))
            stored = await self.store.settings.set_if_absent(SETTINGS_KEY, fresh)
            log.info("created the CA %s", json.loads(stored)["cas"][0]["fingerprint"])
        self.state = self._decode(stored)

    # -- views ---------------------------------------------------------------------------

    @property
    def signer(self) -> pki.CAMaterial:
        return self.state.cas[self.state.signer]

    @property
    def trusted(self) -> list[pki.CAMaterial]:
        return list(self.state.cas)

    def bundle_pem(self) -> bytes:
        """Every trusted CA, signer first (clients fingerprint the first certificate)."""
        order = [self.signer] + [c for i, c in enumerate(self.state.cas) if i != self.state.signer]
        return pki.ca_bundle_pem(order)

    def fingerprint(self) -> str:
        return self.signer.fingerprint()

    # -- labd's own TLS ------------------------------------------------------------------

    def server_ssl_context(self) -> ssl.SSLContext:
        """A TLS server context: a fresh server certificate, client certs optional."""
        cert_pem, key_pem, _ = self.issue_server_cert()
        ctx = pki.server_ssl_context(cert_pem, key_pem, self.bundle_pem(), client_auth="optional")
        self.server_context = ctx
        return ctx

    def issue_server_cert(self) -> tuple[bytes, bytes, pki.IssuedCert]:
        hostnames = ["localhost"]
        ips: list[str] = ["127.0.0.1", "::1"]
        for name in [socket.gethostname(), *self.server_names]:
            try:
                ips.append(str(ipaddress.ip_address(name)))
            except ValueError:
                if name and name not in hostnames:
                    hostnames.append(name)
        key = pki.generate_key()
        csr = pki.make_csr(key, "labd")
        issuer = self.state.cas[self.state.server_issuer]
        cert, issued = pki.issue_server_cert(issuer, csr, hostnames, ips)
        return cert, key, issued

    def write_bundle(self, data_dir: Path) -> Path:
        """Write ``ca.pem`` into the data dir (for curl --cacert and local tools)."""
        path = data_dir / "ca.pem"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(self.bundle_pem())
        tmp.replace(path)
        return path

    def _trust_new_cas(self) -> None:
        # Adding to a live context's store works; removing does not (finish() relies on the
        # per-request check against `trusted`, which no longer lists the old CA).
        if self.server_context is not None:
            self.server_context.load_verify_locations(cadata=self.bundle_pem().decode())

    def renew_server_cert(self) -> None:
        """Present a freshly issued server certificate on new connections (a long-running
        labd renews it with its replica certificate, see lab.labd.cluster)."""
        self._reload_server_cert()

    def _reload_server_cert(self) -> None:
        if self.server_context is None:
            return
        cert, key, _ = self.issue_server_cert()
        pki.load_cert_chain(self.server_context, cert, key)

    # -- rotation ------------------------------------------------------------------------

    async def rotate(self) -> None:
        """Start a rotation: a new CA signs from now on; the old one stays trusted."""
        if self.state.rotating:
            raise Conflict(
                "a CA rotation is already in progress", details={"hint": "finish it first"}
            )
        new = pki.create_ca("labctl CA")
        self.state = CAState(
            cas=[*self.state.cas, new], signer=len(self.state.cas), server_issuer=self.state.signer
        )
        await self.store.settings.set(SETTINGS_KEY, self._encode(self.state))
        self._trust_new_cas()

    async def finish(self) -> None:
        """Drop every CA but the signer; labd's server certificate moves to it."""
        if not self.state.rotating:
            raise Conflict("no CA rotation is in progress")
        self.state = CAState(cas=[self.signer], signer=0, server_issuer=0)
        await self.store.settings.set(SETTINGS_KEY, self._encode(self.state))
        self._reload_server_cert()

    def status(self) -> dict[str, Any]:
        cas = []
        for i, ca in enumerate(self.state.cas):
            state = "active" if i == self.state.signer else "old"
            if self.state.rotating and i == self.state.signer:
                state = "next"
            cas.append(
                {
                    "fingerprint": ca.fingerprint(),
                    "subject": ca.subject,
                    "not_after": ca.not_after.isoformat(),
                    "state": state,
                }
            )
        return {"fingerprint": self.fingerprint(), "rotating": self.state.rotating, "cas": cas}

    # -- storage encoding ----------------------------------------------------------------

    def _encode(self, state: CAState) -> str:
        return json.dumps(
            {
                "version": 1,
                "signer": state.signer,
                "server_issuer": state.server_issuer,
                "cas": [
                    {
                        "fingerprint": ca.fingerprint(),
                        "cert": ca.cert_pem().decode(),
                        "key": base64.b64encode(ca.encrypted_key_blob(self.passphrase)).decode(),
                    }
                    for ca in state.cas
                ],
                "written_at": datetime.now(UTC).isoformat(),
            }
        )

    def _decode(self, text: str) -> CAState:
        data = json.loads(text)
        cas = [
            pki.CAMaterial.from_encrypted(
                item["cert"].encode(), base64.b64decode(item["key"]), self.passphrase
            )
            for item in data["cas"]
        ]
        return CAState(cas=cas, signer=data["signer"], server_issuer=data["server_issuer"])
