"""BMC passwords in the secrets store (``power/TARGET/password``), and moving the ones that
older labd versions sealed in the ``power_drivers`` row itself."""

from __future__ import annotations

import logging

from lab import pki
from lab.labd.secrets.store import SecretsStore
from lab.store import Store

log = logging.getLogger(__name__)

SECRET_MARK = "secrets"  # noqa: S105 - a marker, not a secret
"""The ``sealed`` column of a power row whose password is in the secrets store."""


def power_secret_name(target: str) -> str:
    return f"power/{target}/password"


async def move_power_passwords(store: Store, secrets: SecretsStore, legacy_key: bytes) -> int:
    """Move every password sealed in its power row into the secrets store; how many moved.

    A row that does not open with ``legacy_key`` (the audit key changed) stays as it is and is
    logged: its target answers ``sealed_secret_unreadable`` until its driver is set again.
    """
    moved = 0
    for setting in await store.power.sealed_in_row():
        try:
            password = pki.unseal(legacy_key, setting.target, setting.sealed)
        except pki.SealedSecretUnreadable as exc:
            log.warning("power password of %s stays in its row: %s", setting.target, exc.message)
            continue
        await secrets.put(power_secret_name(setting.target), password.encode("utf-8"))
        if await store.power.replace_sealed(setting.target, setting.sealed, SECRET_MARK):
            moved += 1
    return moved
