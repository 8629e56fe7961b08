"""The power_drivers table on both backends, and sealing its secret (lab.pki.sealing)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from audit_test_key import TEST_AUDIT_KEY

from lab.errors import ConfigError, NotFound
from lab.pki import SealedSecretUnreadable, seal, unseal
from lab.store import PowerSetting, Store
from lab.store.postgres import open_postgres

SCHEMA = Path(__file__).parents[2] / "schema"


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
    with pytest.raises(SealedSecretUnreadable, match="does not open"):
        unseal(key, "machine/b", sealed)
    with pytest.raises(SealedSecretUnreadable, match="does not open"):
        unseal(os.urandom(32), "machine/a", sealed)
    assert seal(key, "machine/a", "") == "" and unseal(key, "machine/a", "") == ""


@pytest.mark.parametrize(
    ("damaged", "reason"),
    [
        ("v2:AAAA", "unknown_format"),
        ("v1:not base64!", "damaged"),
        ("v1:AAAA", "damaged"),  # 3 bytes: no room for a nonce and a tag
        ("v1:" + "A" * 40, "wrong_key"),  # long enough, but nothing this key sealed
    ],
)
def test_a_damaged_sealed_secret_is_named_not_a_raw_error(damaged: str, reason: str) -> None:
    with pytest.raises(SealedSecretUnreadable) as info:
        unseal(os.urandom(32), "machine/a", damaged)
    assert isinstance(info.value, ConfigError) and info.value.code == "sealed_secret_unreadable"
    assert info.value.details == {"target": "machine/a", "reason": reason}
    assert "machine/a" in info.value.message


@pytest.mark.postgres
async def test_postgres_retypes_power_rows_written_as_text(postgres_url: str) -> None:
    """Migration 0010: a row 0005 stored as TEXT reads back the same from JSONB/TIMESTAMPTZ."""
    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY):
        pass
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as conn:
        types = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'power_drivers' AND column_name IN ('settings', 'updated_at')"
            " ORDER BY column_name"
        ).fetchall()
        assert types == [("settings", "jsonb"), ("updated_at", "timestamp with time zone")]
        # Back to the table as 0005 left it, with a row written the way labd wrote it then.
        conn.execute("DROP TABLE power_drivers")
        conn.execute((SCHEMA / "postgres" / "0005_power_drivers.sql").read_text())
        conn.execute(
            "INSERT INTO power_drivers VALUES (%s, %s, %s, %s, %s)",
            (
                "machine/m1",
                "redfish",
                json.dumps({"host": "10.0.0.9", "port": 443}, sort_keys=True),
                "v1:x",
                "2026-11-01T12:00:00.250000+00:00",
            ),
        )
        conn.execute("DELETE FROM schema_migrations WHERE version = 10")
    async with open_postgres(postgres_url, audit_key=TEST_AUDIT_KEY) as store:
        got = await store.power.get("machine/m1")
    assert got == PowerSetting(
        target="machine/m1",
        driver="redfish",
        settings={"host": "10.0.0.9", "port": 443},
        sealed="v1:x",
        updated_at=datetime(2026, 11, 1, 12, 0, 0, 250000, tzinfo=UTC),
    )
