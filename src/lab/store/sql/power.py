"""The repository of power driver settings (one row per machine or server, see docs/power.md).

Times and the settings go through the backend's row codec like every other table's: canonical
text on SQLite, ``TIMESTAMPTZ`` and ``JSONB`` on PostgreSQL (migration 0010).
"""

from __future__ import annotations

from datetime import UTC, datetime

from lab.store.base import PowerSetting
from lab.store.rows import Row
from lab.store.rules import not_found
from lab.store.sql.dialect import Runner, Tx

_COLS = "target, driver, settings, sealed, updated_at"


def _setting(tx: Tx, row: Row) -> PowerSetting:
    codec = tx.dialect.codec
    return PowerSetting(
        target=row[0],
        driver=row[1],
        settings=codec.parse_json(row[2]),
        sealed=row[3],
        updated_at=codec.parse_time(row[4]),
    )


def _get(tx: Tx, target: str) -> PowerSetting:
    row = tx.one(f"SELECT {_COLS} FROM power_drivers WHERE target = ?", (target,))  # noqa: S608
    if row is None:
        raise not_found("power driver", target)
    return _setting(tx, row)


class PowerDrivers:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def set(self, setting: PowerSetting) -> PowerSetting:
        def op(tx: Tx) -> PowerSetting:
            codec = tx.dialect.codec
            tx.run(
                f"INSERT INTO power_drivers ({_COLS}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (target) DO UPDATE SET driver = excluded.driver,"
                " settings = excluded.settings, sealed = excluded.sealed,"
                " updated_at = excluded.updated_at",
                (
                    setting.target,
                    setting.driver,
                    codec.json(setting.settings),
                    setting.sealed,
                    codec.time(datetime.now(UTC)),
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

    async def sealed_in_row(self) -> list[PowerSetting]:
        def op(tx: Tx) -> list[PowerSetting]:
            # The pattern is a parameter: no statement of the store holds a literal '%'.
            rows = tx.all(
                f"SELECT {_COLS} FROM power_drivers WHERE sealed LIKE ? ORDER BY target",  # noqa: S608
                ("v1:%",),
            )
            return [_setting(tx, r) for r in rows]

        return await self._db.read(op)

    async def replace_sealed(self, target: str, old: str, new: str) -> bool:
        def op(tx: Tx) -> bool:
            changed = tx.run(
                "UPDATE power_drivers SET sealed = ? WHERE target = ? AND sealed = ?",
                (new, target, old),
            )
            return changed == 1

        return await self._db.write(op)
