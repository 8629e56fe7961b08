"""The secrets store's rows: sealed values and wrapped data keys (migration 0006).

Only ciphertext passes through here; lab.labd.secrets seals and opens.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from lab.errors import Conflict
from lab.store.base import SealedSecret, SecretKeyRow
from lab.store.rules import not_found
from lab.store.sql.dialect import Runner, Tx

_VALUE_COLS = "name, key_id, sealed, created_at, updated_at"


def _value(tx: Tx, row: Any) -> SealedSecret:
    codec = tx.dialect.codec
    return SealedSecret(
        name=row[0],
        key_id=row[1],
        sealed=row[2],
        created_at=codec.parse_time(row[3]),
        updated_at=codec.parse_time(row[4]),
    )


def _get(tx: Tx, name: str) -> SealedSecret:
    row = tx.one(f"SELECT {_VALUE_COLS} FROM secrets WHERE name = ?", (name,))  # noqa: S608
    if row is None:
        raise not_found("secret", name)
    return _value(tx, row)


def _key_exists(tx: Tx, key_id: str) -> bool:
    return tx.one("SELECT 1 FROM secret_keys WHERE id = ?", (key_id,)) is not None


class Secrets:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def keys(self) -> list[SecretKeyRow]:
        def op(tx: Tx) -> list[SecretKeyRow]:
            rows = tx.all(
                "SELECT id, kek_id, wrapped, created_at FROM secret_keys"
                " ORDER BY created_at DESC, id DESC"
            )
            return [
                SecretKeyRow(
                    id=r[0],
                    kek_id=r[1],
                    wrapped=r[2],
                    created_at=tx.dialect.codec.parse_time(r[3]),
                )
                for r in rows
            ]

        return await self._db.read(op)

    async def add_key(self, key: SecretKeyRow) -> None:
        await self._db.write(_add_key, key)

    async def get(self, name: str) -> SealedSecret:
        return await self._db.read(_get, name)

    async def list(self, prefix: str = "") -> builtins.list[SealedSecret]:
        def op(tx: Tx) -> list[SealedSecret]:
            rows = tx.all(f"SELECT {_VALUE_COLS} FROM secrets ORDER BY name")  # noqa: S608
            # Filtered here, not with LIKE: a name may hold % or _.
            return [_value(tx, r) for r in rows if str(r[0]).startswith(prefix)]

        return await self._db.read(op)

    async def put(self, name: str, key_id: str, sealed: str) -> SealedSecret:
        def op(tx: Tx) -> SealedSecret:
            if not _key_exists(tx, key_id):
                raise Conflict(f"data key {key_id} was retired", details={"key_id": key_id})
            now = tx.dialect.codec.time(datetime.now(UTC))
            tx.run(
                f"INSERT INTO secrets ({_VALUE_COLS}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id,"
                " sealed = excluded.sealed, updated_at = excluded.updated_at",
                (name, key_id, sealed, now, now),
            )
            return _get(tx, name)

        return await self._db.write(op)

    async def delete(self, name: str) -> bool:
        def op(tx: Tx) -> bool:
            return tx.run("DELETE FROM secrets WHERE name = ?", (name,)) > 0

        return await self._db.write(op)

    async def rotate(
        self, key: SecretKeyRow, resealed: Sequence[tuple[SealedSecret, SealedSecret]]
    ) -> int:
        def op(tx: Tx) -> int:
            _add_key(tx, key)
            now = tx.dialect.codec.time(datetime.now(UTC))
            for old, new in resealed:
                changed = tx.run(
                    "UPDATE secrets SET key_id = ?, sealed = ?, updated_at = ?"
                    " WHERE name = ? AND key_id = ? AND sealed = ?",
                    (new.key_id, new.sealed, now, old.name, old.key_id, old.sealed),
                )
                if changed != 1:
                    raise Conflict(
                        f"secret {old.name!r} changed during the rotation; run it again",
                        details={"name": old.name},
                    )
            return tx.run(
                "DELETE FROM secret_keys WHERE id <> ? AND id NOT IN (SELECT key_id FROM secrets)",
                (key.id,),
            )

        return await self._db.write(op)


def _add_key(tx: Tx, key: SecretKeyRow) -> None:
    tx.run(
        "INSERT INTO secret_keys (id, kek_id, wrapped, created_at) VALUES (?, ?, ?, ?)",
        (key.id, key.kek_id, key.wrapped, tx.dialect.codec.time(key.created_at)),
    )
