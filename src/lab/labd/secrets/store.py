"""labd's secrets store (``ctx().secrets``): named values sealed with AES-256-GCM under data
keys that are stored wrapped by the key-encryption key (see :mod:`lab.labd.secrets.keys`).

Names are paths such as ``cluster/NAME/kubeconfig``, ``cluster/NAME/token``,
``app/NAME/REVISION/values``. Values never leave this object except as the bytes ``get``
returns; callers must not log them, audit them or put them in an API answer unless a route
exists for exactly that (``clusters:read-credentials``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from attrs import frozen

from lab import pki
from lab.errors import Conflict, Invalid, TooLarge
from lab.model.records import new_id
from lab.store import SealedSecret, SecretKeyRow, SecretRepository

MAX_VALUE = 1024 * 1024
# Path segments; ':' for MAC addresses (power/machine/52:54:00:12:34:56/password).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*(/[A-Za-z0-9][A-Za-z0-9._:-]*)*")
MAX_NAME = 253
_RETRIES = 3


def check_name(name: str) -> str:
    """``name`` if it is a valid secret name (path segments of ``[A-Za-z0-9._-]``)."""
    if len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
        raise Invalid(
            f"secret name {name[:80]!r} is not valid: path segments of letters, digits, "
            "'.', '_', ':' and '-'",
            details={"fields": ["name"]},
        )
    return name


@frozen(kw_only=True)
class Rotation:
    """What a rotation did: the new data key, values re-sealed, data keys dropped."""

    key_id: str
    resealed: int
    dropped: int


class SecretsStore:
    """put/get/delete/rotate over the repository; data keys unwrapped once and cached.

    ``previous`` are former key-encryption keys, used only to open data keys they wrapped (a
    rotation after changing the key file re-wraps everything under ``kek``). Every method may
    raise :class:`lab.errors.Unavailable` (database) and :class:`lab.pki.WrongSecretsKey`
    (a data key wrapped by a key-encryption key labd does not have). Cancellation leaves the
    outcome of a write unknown, as for every repository call.
    """

    def __init__(
        self,
        repo: SecretRepository,
        kek: pki.KeyEncryptionKey,
        *,
        previous: Sequence[pki.KeyEncryptionKey] = (),
    ) -> None:
        self._repo = repo
        self._kek = kek
        self._keks = {k.kek_id: k for k in (*previous, kek)}
        self._data_keys: dict[str, bytes] = {}

    @property
    def kek_id(self) -> str:
        return self._kek.kek_id

    def _unwrap(self, row: SecretKeyRow) -> bytes:
        kek = self._keks.get(row.kek_id)
        if kek is None:
            raise pki.WrongSecretsKey(
                f"data key {row.id} was wrapped by key-encryption key {row.kek_id}; this labd "
                f"has {self._kek.kek_id} (LABD_SECRETS_KEY_FILE or the CA passphrase differs "
                "from the one the secrets were stored with; see docs/clusters.md)",
                details={"key_id": row.id, "kek_id": row.kek_id, "have": self._kek.kek_id},
            )
        data_key = pki.unwrap_data_key(kek, row.id, row.wrapped)
        self._data_keys[row.id] = data_key
        return data_key

    async def _data_key(self, key_id: str) -> bytes:
        cached = self._data_keys.get(key_id)
        if cached is not None:
            return cached
        for row in await self._repo.keys():
            if row.id == key_id:
                return self._unwrap(row)
        raise pki.WrongSecretsKey(f"data key {key_id} is not stored", details={"key_id": key_id})

    async def _new_key(self) -> tuple[SecretKeyRow, bytes]:
        key_id = new_id()
        data_key = pki.new_data_key()
        row = SecretKeyRow(
            id=key_id,
            kek_id=self._kek.kek_id,
            wrapped=pki.wrap_data_key(self._kek, key_id, data_key),
            created_at=datetime.now(UTC),
        )
        return row, data_key

    async def _current(self) -> tuple[str, bytes]:
        """The data key new values use: the newest stored, created on first use."""
        rows = await self._repo.keys()
        for row in rows:
            if row.kek_id == self._kek.kek_id:
                return row.id, self._data_keys.get(row.id) or self._unwrap(row)
        if rows:  # only keys of another KEK: opening them would fail, say so now
            self._unwrap(rows[0])
        row, data_key = await self._new_key()
        await self._repo.add_key(row)
        self._data_keys[row.id] = data_key
        return row.id, data_key

    async def check(self) -> None:
        """Open the newest data key; raises :class:`WrongSecretsKey` when labd has the wrong
        key-encryption key (called at start-up, so a misconfigured replica stops at once)."""
        rows = await self._repo.keys()
        if rows:
            self._unwrap(rows[0])

    async def put(self, name: str, value: bytes) -> None:
        """Store ``value`` sealed under ``name`` (replacing it)."""
        check_name(name)
        if len(value) > MAX_VALUE:
            raise TooLarge(f"secret {name!r} is larger than {MAX_VALUE} bytes")
        for attempt in range(_RETRIES):
            key_id, data_key = await self._current()
            sealed = pki.seal_value(data_key, key_id, name, value)
            try:
                await self._repo.put(name, key_id, sealed)
                return
            except Conflict:  # a rotation retired the key between read and write
                self._data_keys.pop(key_id, None)
                if attempt == _RETRIES - 1:
                    raise

    async def get(self, name: str) -> bytes:
        """The value of ``name``; :class:`lab.errors.NotFound` when there is none."""
        row = await self._repo.get(check_name(name))
        return self._open(row, await self._data_key(row.key_id))

    def _open(self, row: SealedSecret, data_key: bytes) -> bytes:
        return pki.open_value(data_key, row.key_id, row.name, row.sealed)

    async def delete(self, name: str) -> bool:
        """Drop ``name`` (idempotent); whether it existed."""
        return await self._repo.delete(check_name(name))

    async def names(self, prefix: str = "") -> list[str]:
        return [row.name for row in await self._repo.list(prefix)]

    async def rotate(self) -> Rotation:
        """A new data key wrapped by the current key-encryption key; every value re-sealed under
        it and every other data key dropped, in one transaction (retried if a value changed
        meanwhile). Afterwards only the current key-encryption key is needed."""
        for attempt in range(_RETRIES):
            rows = await self._repo.list()
            row, data_key = await self._new_key()
            pairs = []
            for old in rows:
                plain = self._open(old, await self._data_key(old.key_id))
                sealed = pki.seal_value(data_key, row.id, old.name, plain)
                new = SealedSecret(
                    name=old.name,
                    key_id=row.id,
                    sealed=sealed,
                    created_at=old.created_at,
                    updated_at=old.updated_at,
                )
                pairs.append((old, new))
            try:
                dropped = await self._repo.rotate(row, pairs)
            except Conflict:
                if attempt == _RETRIES - 1:
                    raise
                continue
            self._data_keys = {row.id: data_key}
            return Rotation(key_id=row.id, resealed=len(pairs), dropped=dropped)
        raise AssertionError("unreachable")  # pragma: no cover
