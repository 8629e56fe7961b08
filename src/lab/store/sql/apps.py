"""The repository of app releases and their revisions (migration 0009, docs/apps.md).

One operation at a time per release: :meth:`AppReleases.lock` takes the release's lease in one
conditional UPDATE (or names who holds it), every revision write is guarded by that owner, and
:meth:`AppReleases.expire` fails the revision of an operation whose lease ran out and frees the
release, so a killed labd never leaves a release "pending".
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from lab.errors import Conflict
from lab.model.apps import AppRevision, ExpiredLock, ObjectRef, ReleaseKey, ReleaseLock
from lab.store.rules import not_found
from lab.store.sql.dialect import Runner, Tx

_REV_COLS = (
    "cluster, namespace, name, revision, module, version, module_digest, values_json,"
    " secret_ref, manifest, manifest_digest, inventory, status, operation, description,"
    " requested_by, request_id, created_at, updated_at"
)
_KEY = "cluster = ? AND namespace = ? AND name = ?"
_PENDING = ("pending-install", "pending-upgrade", "pending-rollback")


def _k(key: ReleaseKey) -> tuple[str, str, str]:
    return (key.cluster, key.namespace, key.name)


def _rev(tx: Tx, row: Any) -> AppRevision:
    codec = tx.dialect.codec
    return AppRevision(
        key=ReleaseKey(cluster=row[0], namespace=row[1], name=row[2]),
        revision=int(row[3]),
        module=row[4],
        version=row[5],
        module_digest=row[6],
        values=json.loads(row[7]),
        secret_ref=row[8],
        manifest=row[9],
        manifest_digest=row[10],
        inventory=tuple(ObjectRef.from_dict(d) for d in json.loads(row[11])),
        status=row[12],
        operation=row[13],
        description=row[14],
        requested_by=row[15],
        request_id=row[16],
        created_at=codec.opt_parse_time(row[17]),
        updated_at=codec.opt_parse_time(row[18]),
    )


def _inventory(refs: tuple[ObjectRef, ...]) -> str:
    return json.dumps([r.as_dict() for r in refs], sort_keys=True)


def _get(tx: Tx, key: ReleaseKey, revision: int | None) -> AppRevision:
    if revision is None:
        row = tx.one(
            f"SELECT {_REV_COLS} FROM app_revisions WHERE {_KEY} ORDER BY revision DESC LIMIT 1",
            _k(key),
        )
    else:
        row = tx.one(
            f"SELECT {_REV_COLS} FROM app_revisions WHERE {_KEY} AND revision = ?",
            (*_k(key), revision),
        )
    if row is None:
        what = f"{key}" if revision is None else f"{key} revision {revision}"
        raise not_found("app", what, resource=f"app/{key}")
    return _rev(tx, row)


def _held(tx: Tx, key: ReleaseKey, owner: str) -> None:
    row = tx.one(f"SELECT lock_owner FROM app_releases WHERE {_KEY}", _k(key))
    if row is None or row[0] != owner:
        raise Conflict(
            f"app {key}: the operation of {owner} no longer holds the release",
            details={"holder": row[0] if row else ""},
        )


class AppReleases:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def lock(
        self,
        key: ReleaseKey,
        *,
        owner: str,
        operation: str,
        who: str,
        now: datetime,
        lease_until: datetime,
        history_max: int | None = None,
    ) -> ReleaseLock:
        """Take the release for one operation (creating the release row on first use).

        Conflict naming the holder (``details``: owner, operation, who, lease_until) while
        another operation's lease runs; a lease that ran out is taken over (call
        :meth:`expire` first so the revision it left is marked failed).
        """

        def tx_(tx: Tx) -> ReleaseLock:
            codec = tx.dialect.codec
            exists = tx.one(f"SELECT 1 FROM app_releases WHERE {_KEY}", _k(key))
            if exists is None:
                tx.run(
                    "INSERT INTO app_releases (cluster, namespace, name, history_max, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (*_k(key), history_max or 10, codec.time(now)),
                )
            taken = tx.run(
                "UPDATE app_releases SET lock_owner = ?, lock_op = ?, lock_who = ?,"
                f" lease_until = ? WHERE {_KEY} AND (lock_owner = '' OR lease_until < ?)",
                (owner, operation, who, codec.time(lease_until), *_k(key), codec.time(now)),
            )
            if taken != 1:
                row = tx.one(
                    f"SELECT lock_owner, lock_op, lock_who, lease_until FROM app_releases"
                    f" WHERE {_KEY}",
                    _k(key),
                )
                until = codec.opt_parse_time(row[3])
                raise Conflict(
                    f"app {key}: another operation is running: {row[1]} by {row[2]}"
                    f" (owner {row[0]}, lease until {until.isoformat() if until else '?'})",
                    details={
                        "owner": row[0],
                        "operation": row[1],
                        "who": row[2],
                        "lease_until": until.isoformat() if until else None,
                    },
                )
            if history_max:
                tx.run(
                    f"UPDATE app_releases SET history_max = ? WHERE {_KEY}", (history_max, *_k(key))
                )
            return ReleaseLock(
                key=key, owner=owner, operation=operation, who=who, lease_until=lease_until
            )

        return await self._db.write(tx_)

    async def renew(self, key: ReleaseKey, owner: str, *, lease_until: datetime) -> bool:
        """Extend the lease; False when ``owner`` no longer holds the release."""

        def tx_(tx: Tx) -> bool:
            done = tx.run(
                f"UPDATE app_releases SET lease_until = ? WHERE {_KEY} AND lock_owner = ?",
                (tx.dialect.codec.time(lease_until), *_k(key), owner),
            )
            return bool(done == 1)

        return await self._db.write(tx_)

    async def unlock(self, key: ReleaseKey, owner: str) -> None:
        """Free the release (a no-op when ``owner`` no longer holds it)."""

        def tx_(tx: Tx) -> None:
            tx.run(
                "UPDATE app_releases SET lock_owner = '', lock_op = '', lock_who = '',"
                f" lease_until = NULL WHERE {_KEY} AND lock_owner = ?",
                (*_k(key), owner),
            )

        await self._db.write(tx_)

    async def holder(self, key: ReleaseKey) -> ReleaseLock | None:
        """Who holds the release now (even with a lease that ran out), or None."""

        def tx_(tx: Tx) -> ReleaseLock | None:
            row = tx.one(
                f"SELECT lock_owner, lock_op, lock_who, lease_until FROM app_releases WHERE {_KEY}",
                _k(key),
            )
            if row is None or not row[0]:
                return None
            until = tx.dialect.codec.opt_parse_time(row[3])
            return ReleaseLock(
                key=key, owner=row[0], operation=row[1], who=row[2], lease_until=until
            )

        return await self._db.read(tx_)

    async def expire(
        self, *, now: datetime, owner: str | None = None, reason: str = ""
    ) -> list[ExpiredLock]:
        """Fail the pending revision of every release whose lease ran out by ``now`` (and, with
        ``owner``, of every one whose owner starts with it: that replica restarted, or that
        operation ended without finishing its revision) and free those releases. ``reason``
        replaces the revision's "lease ran out" description."""

        def tx_(tx: Tx) -> list[ExpiredLock]:
            t = tx.dialect.codec.time(now)
            select = (
                "SELECT cluster, namespace, name, lock_owner, lock_op, lock_who FROM app_releases"
                " WHERE lock_owner <> '' AND "
            )
            if owner:
                rows = tx.all(
                    select + "(lease_until < ? OR substr(lock_owner, 1, ?) = ?)",
                    (t, len(owner), owner),
                )
            else:
                rows = tx.all(select + "lease_until < ?", (t,))
            out: list[ExpiredLock] = []
            for cluster, namespace, name, holder, op, who in rows:
                key = ReleaseKey(cluster=cluster, namespace=namespace, name=name)
                pending = tx.one(
                    f"SELECT revision FROM app_revisions WHERE {_KEY} AND status IN (?, ?, ?)"
                    " ORDER BY revision DESC LIMIT 1",
                    (*_k(key), *_PENDING),
                )
                lapsed = f"interrupted: the {op} of {who} stopped (lease of {holder} ran out)"
                why = reason or lapsed
                tx.run(
                    "UPDATE app_revisions SET status = 'failed', description = ?, updated_at = ?"
                    f" WHERE {_KEY} AND status IN (?, ?, ?)",
                    (why, t, *_k(key), *_PENDING),
                )
                tx.run(
                    "UPDATE app_releases SET lock_owner = '', lock_op = '', lock_who = '',"
                    f" lease_until = NULL WHERE {_KEY} AND lock_owner = ?",
                    (*_k(key), holder),
                )
                out.append(
                    ExpiredLock(
                        key=key,
                        revision=int(pending[0]) if pending else None,
                        owner=holder,
                        operation=op,
                        who=who,
                    )
                )
            return out

        return await self._db.write(tx_)

    async def add(self, rev: AppRevision, owner: str) -> AppRevision:
        """Record ``rev`` as the next revision (its number is assigned here); the caller must
        hold the release."""

        def tx_(tx: Tx) -> AppRevision:
            codec = tx.dialect.codec
            _held(tx, rev.key, owner)
            row = tx.one(f"SELECT MAX(revision) FROM app_revisions WHERE {_KEY}", _k(rev.key))
            number = int(row[0] or 0) + 1
            assert rev.created_at is not None
            tx.run(
                f"INSERT INTO app_revisions ({_REV_COLS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *_k(rev.key),
                    number,
                    rev.module,
                    rev.version,
                    rev.module_digest,
                    json.dumps(rev.values, sort_keys=True),
                    rev.secret_ref,
                    rev.manifest,
                    rev.manifest_digest,
                    _inventory(rev.inventory),
                    rev.status,
                    rev.operation,
                    rev.description,
                    rev.requested_by,
                    rev.request_id,
                    codec.time(rev.created_at),
                    codec.time(rev.created_at),
                ),
            )
            return _get(tx, rev.key, number)

        return await self._db.write(tx_)

    async def next_revision(self, key: ReleaseKey) -> int:
        def tx_(tx: Tx) -> int:
            row = tx.one(f"SELECT MAX(revision) FROM app_revisions WHERE {_KEY}", _k(key))
            return int(row[0] or 0) + 1

        return await self._db.read(tx_)

    async def set_status(
        self,
        key: ReleaseKey,
        revision: int,
        owner: str,
        *,
        status: str,
        at: datetime,
        description: str | None = None,
        inventory: tuple[ObjectRef, ...] | None = None,
    ) -> AppRevision:
        """Update one revision; ``deployed`` also marks the release's other deployed revision
        ``superseded`` (one transaction). Conflict when ``owner`` lost the release."""

        def tx_(tx: Tx) -> AppRevision:
            t = tx.dialect.codec.time(at)
            _held(tx, key, owner)
            if status == "deployed":
                tx.run(
                    "UPDATE app_revisions SET status = 'superseded', updated_at = ?"
                    f" WHERE {_KEY} AND status = 'deployed' AND revision <> ?",
                    (t, *_k(key), revision),
                )
            sets, params = ["status = ?", "updated_at = ?"], [status, t]
            if description is not None:
                sets.append("description = ?")
                params.append(description)
            if inventory is not None:
                sets.append("inventory = ?")
                params.append(_inventory(inventory))
            tx.run(
                f"UPDATE app_revisions SET {', '.join(sets)} WHERE {_KEY} AND revision = ?",
                (*params, *_k(key), revision),
            )
            return _get(tx, key, revision)

        return await self._db.write(tx_)

    async def get(self, key: ReleaseKey, revision: int | None = None) -> AppRevision:
        """One revision (the newest without ``revision``); NotFound."""
        return await self._db.read(_get, key, revision)

    async def history(self, key: ReleaseKey) -> list[AppRevision]:
        """Every kept revision, oldest first (empty for an unknown release)."""

        def tx_(tx: Tx) -> list[AppRevision]:
            rows = tx.all(
                f"SELECT {_REV_COLS} FROM app_revisions WHERE {_KEY} ORDER BY revision", _k(key)
            )
            return [_rev(tx, r) for r in rows]

        return await self._db.read(tx_)

    async def releases(
        self, *, cluster: str | None = None, namespace: str | None = None
    ) -> list[AppRevision]:
        """The newest revision of every release (optionally of one cluster or namespace)."""

        def tx_(tx: Tx) -> list[AppRevision]:
            where, params = [], []
            if cluster is not None:
                where.append("r.cluster = ?")
                params.append(cluster)
            if namespace is not None:
                where.append("r.namespace = ?")
                params.append(namespace)
            cols = ", ".join(f"r.{c.strip()}" for c in _REV_COLS.split(","))
            rows = tx.all(
                f"SELECT {cols} FROM app_revisions r WHERE r.revision = (SELECT MAX(revision)"
                " FROM app_revisions x WHERE x.cluster = r.cluster AND x.namespace = r.namespace"
                " AND x.name = r.name)"
                + "".join(f" AND {w}" for w in where)
                + " ORDER BY r.cluster, r.namespace, r.name",
                params,
            )
            return [_rev(tx, r) for r in rows]

        return await self._db.read(tx_)

    async def trim(self, key: ReleaseKey, owner: str) -> list[AppRevision]:
        """Drop the oldest revisions beyond the release's history_max (never the deployed one);
        returns those dropped (their sealed secrets are the caller's to delete)."""

        def tx_(tx: Tx) -> list[AppRevision]:
            _held(tx, key, owner)
            keep_row = tx.one(f"SELECT history_max FROM app_releases WHERE {_KEY}", _k(key))
            keep = int(keep_row[0]) if keep_row else 10
            rows = tx.all(
                f"SELECT {_REV_COLS} FROM app_revisions WHERE {_KEY} ORDER BY revision DESC",
                _k(key),
            )
            dropped = [_rev(tx, r) for r in rows[keep:] if r[12] != "deployed"]
            for rev in dropped:
                tx.run(
                    f"DELETE FROM app_revisions WHERE {_KEY} AND revision = ?",
                    (*_k(key), rev.revision),
                )
            return dropped

        return await self._db.write(tx_)

    async def delete(self, key: ReleaseKey, owner: str) -> list[AppRevision]:
        """Forget the release and every revision (uninstall without --keep-history)."""

        def tx_(tx: Tx) -> list[AppRevision]:
            _held(tx, key, owner)
            rows = tx.all(f"SELECT {_REV_COLS} FROM app_revisions WHERE {_KEY}", _k(key))
            gone = [_rev(tx, r) for r in rows]
            tx.run(f"DELETE FROM app_revisions WHERE {_KEY}", _k(key))
            tx.run(f"DELETE FROM app_releases WHERE {_KEY}", _k(key))
            return gone

        return await self._db.write(tx_)
