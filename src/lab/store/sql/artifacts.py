"""Artifact metadata rows (migration 0006); the content lives in files named by sha256."""

from __future__ import annotations

import builtins
from typing import Any

from lab.errors import Conflict
from lab.model import Artifact
from lab.store.rules import not_found
from lab.store.sql.dialect import Runner, Tx

_COLS = "name, version, arch, sha256, size, filename, created_by, created_at"


def _artifact(tx: Tx, row: Any) -> Artifact:
    return Artifact(
        name=row[0],
        version=row[1],
        arch=row[2],
        sha256=row[3],
        size=int(row[4]),
        filename=row[5],
        created_by=row[6],
        created_at=tx.dialect.codec.parse_time(row[7]),
    )


def _get(tx: Tx, name: str, version: str, arch: str) -> Artifact:
    row = tx.one(
        f"SELECT {_COLS} FROM artifacts WHERE name = ? AND version = ? AND arch = ?",  # noqa: S608
        (name, version, arch),
    )
    if row is None:
        raise not_found("artifact", f"{name} {version} {arch}", resource="artifact")
    return _artifact(tx, row)


class Artifacts:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def add(self, artifact: Artifact) -> tuple[Artifact, bool]:
        """Insert ``artifact``; (the row, whether it is new). The same name, version and arch
        with the same content is no change; with other content it is a ``Conflict``."""

        def op(tx: Tx) -> tuple[Artifact, bool]:
            row = tx.one(
                "SELECT sha256 FROM artifacts WHERE name = ? AND version = ? AND arch = ?",
                (artifact.name, artifact.version, artifact.arch),
            )
            if row is not None:
                if row[0] != artifact.sha256:
                    raise Conflict(
                        f"artifact {artifact.name} {artifact.version} {artifact.arch} exists "
                        "with other content; delete it first",
                        details={"sha256": row[0]},
                    )
                return _get(tx, artifact.name, artifact.version, artifact.arch), False
            tx.run(
                f"INSERT INTO artifacts ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    artifact.name,
                    artifact.version,
                    artifact.arch,
                    artifact.sha256,
                    artifact.size,
                    artifact.filename,
                    artifact.created_by,
                    tx.dialect.codec.time(artifact.created_at),
                ),
            )
            return _get(tx, artifact.name, artifact.version, artifact.arch), True

        return await self._db.write(op)

    async def get(self, name: str, version: str, arch: str) -> Artifact:
        return await self._db.read(_get, name, version, arch)

    async def list(self, name: str | None = None) -> builtins.list[Artifact]:
        def op(tx: Tx) -> list[Artifact]:
            if name is None:
                rows = tx.all(f"SELECT {_COLS} FROM artifacts ORDER BY name, version, arch")  # noqa: S608
            else:
                rows = tx.all(
                    f"SELECT {_COLS} FROM artifacts WHERE name = ?"  # noqa: S608
                    " ORDER BY version, arch",
                    (name,),
                )
            return [_artifact(tx, r) for r in rows]

        return await self._db.read(op)

    async def delete(self, name: str, version: str, arch: str) -> tuple[Artifact, int]:
        """Drop the row; (it, how many rows still name its content)."""

        def op(tx: Tx) -> tuple[Artifact, int]:
            gone = _get(tx, name, version, arch)
            tx.run(
                "DELETE FROM artifacts WHERE name = ? AND version = ? AND arch = ?",
                (name, version, arch),
            )
            left = tx.one("SELECT COUNT(*) FROM artifacts WHERE sha256 = ?", (gone.sha256,))
            return gone, int(left[0])

        return await self._db.write(op)

    async def references(self, sha256: str) -> int:
        def op(tx: Tx) -> int:
            return int(tx.one("SELECT COUNT(*) FROM artifacts WHERE sha256 = ?", (sha256,))[0])

        return await self._db.read(op)
