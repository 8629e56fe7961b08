"""``labd secrets rotate``: a new data key, every value re-sealed under it, against the
database labd's configuration names (a running labd keeps working: it picks the new data key
up on its next read, and a write that raced the rotation retries)."""

from __future__ import annotations

from pathlib import Path

import trio

from lab.labd.audit.keys import audit_keys
from lab.labd.config import LabdConfig
from lab.labd.secrets.keys import key_encryption_key, previous_keys
from lab.labd.secrets.store import Rotation, SecretsStore
from lab.labd.storage import open_database
from lab.model import AuditEntry
from lab.pki import resolve_ca_passphrase


async def rotate_secrets(config: LabdConfig, previous_key_file: Path | None = None) -> Rotation:
    """Rotate (see the module docstring) and audit it as ``secrets:rotate`` by ``labd``.

    ``previous_key_file`` is the former key file (or CA passphrase file) when the
    key-encryption key changed: data keys it wrapped are re-wrapped under the current one.
    Raises :class:`lab.pki.WrongSecretsKey` when a data key opens with neither.
    """
    passphrase = resolve_ca_passphrase(config.data_path)
    keys = await trio.to_thread.run_sync(audit_keys, passphrase)
    kek = await trio.to_thread.run_sync(key_encryption_key, config.secrets_key_file, passphrase)
    previous = []
    if previous_key_file is not None:
        previous = await trio.to_thread.run_sync(previous_keys, previous_key_file)
    async with open_database(config, keys.chain) as store:
        await store.audit.start_chain()
        done = await SecretsStore(store.secrets, kek, previous=previous).rotate()
        await store.audit.append(
            AuditEntry(
                user="labd",
                action="secrets:rotate",
                resource="secrets",
                result="success",
                details={
                    "key_id": done.key_id,
                    "kek_id": kek.kek_id,
                    "resealed": done.resealed,
                    "dropped_keys": done.dropped,
                },
            )
        )
    return done
