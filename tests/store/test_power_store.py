"""The power_drivers table on both backends, and sealing its secret (lab.pki.sealing)."""

from __future__ import annotations

import os

import pytest

from lab.errors import ConfigError, NotFound
from lab.pki import seal, unseal
from lab.store import PowerSetting, Store


async def test_set_get_replace_delete(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.power.get("server/web1")
    first = await store.power.set(
        PowerSetting(
            target="server/web1",
            driver="ipmi",
            settings={"host": "10.0.0.5", "port": 623, "username": "admin"},
            sealed="v1:abc",
        )
    )
    assert first.settings == {"host": "10.0.0.5", "port": 623, "username": "admin"}
    assert first.sealed == "v1:abc" and first.updated_at is not None
    again = await store.power.set(
        PowerSetting(target="server/web1", driver="wol", settings={"mac": "52:54:00:00:00:01"})
    )
    assert (again.driver, again.sealed) == ("wol", "")
    assert (await store.power.get("server/web1")).settings == {"mac": "52:54:00:00:00:01"}
    await store.power.delete("server/web1")
    await store.power.delete("server/web1")  # idempotent
    with pytest.raises(NotFound):
        await store.power.get("server/web1")


def test_sealing_is_bound_to_key_and_target() -> None:
    key = os.urandom(32)
    sealed = seal(key, "machine/a", "hunter2")
    assert "hunter2" not in sealed and sealed.startswith("v1:")
    assert seal(key, "machine/a", "hunter2") != sealed  # a fresh nonce each time
    assert unseal(key, "machine/a", sealed) == "hunter2"
    with pytest.raises(ConfigError, match="does not open"):
        unseal(key, "machine/b", sealed)
    with pytest.raises(ConfigError, match="does not open"):
        unseal(os.urandom(32), "machine/a", sealed)
    assert seal(key, "machine/a", "") == "" and unseal(key, "machine/a", "") == ""
