"""The repository of power driver settings (one row per machine or server, see docs/power.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from lab.store.base import PowerSetting
from lab.store.rules import not_found
from lab.store.sql.dialect import Runner, Tx

_COLS = "target, driver, settings, sealed, updated_at"


def _setting(row: Any) -> PowerSetting:
    return PowerSetting(
        target=row[0],
        driver=row[1],
        settings=json.loads(row[2]),
        sealed=row[3],
        updated_at=datetime.fromisoformat(row[4]),
    )


def _get(tx: Tx, target: str) -> PowerSetting:
    row = tx.one(f"SELECT {_COLS} FROM power_drivers WHERE target = ?", (target,))  # noqa: S608
    if row is None:
        raise not_found("power driver", target)
    return _setting(row)


class PowerDrivers:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def set(self, setting: PowerSetting) -> PowerSetting:
        def op(tx: Tx) -> PowerSetting:
            tx.run(
                f"INSERT INTO power_drivers ({_COLS}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (target) DO UPDATE SET driver = excluded.driver,"
                " settings = excluded.settings, sealed = excluded.sealed,"
                " updated_at = excluded.updated_at",
                (
                    setting.target,
                    setting.driver,
                    json.dumps(setting.settings, sort_keys=True),
                    setting.sealed,
                    datetime.now(UTC).isoformat(),
                ),
            )
            return _get(tx, setting.target)

        return await self._db.write(op)

    async def get(self, target: str) -> PowerSetting:
        return await self._db.read(_get, target)

    async def delete(self, target: str) -> None:
        def op(tx: Tx) -> None:
            tx.run("DELETE FROM power_drivers WHERE target = ?", (target,))

        await self._db.write(op)
