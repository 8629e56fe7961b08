"""The secrets store on SQLite and PostgreSQL: the repository (ciphertext rows, wrapped data
keys, the one-transaction rotation) and labd's SecretsStore over it (envelope encryption,
rotation, a wrong key-encryption key named as such)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lab import pki
from lab.errors import Conflict, Invalid, NotFound, TooLarge
from lab.labd.secrets import SecretsStore
from lab.store import SealedSecret, SecretKeyRow, Store

KEK = pki.derive_kek(b"test key-encryption key material")
OTHER_KEK = pki.derive_kek(b"another key-encryption key material")
KUBECONFIG = b"apiVersion: v1\nusers:\n- user:\n    token: very-secret-token-4711\n"


def key_row(key_id: str, wrapped: str = "w") -> SecretKeyRow:
    return SecretKeyRow(id=key_id, kek_id="k", wrapped=wrapped, created_at=datetime.now(UTC))


async def test_repository_put_get_list_delete(store: Store) -> None:
    repo = store.secrets
    assert await repo.keys() == []
    await repo.add_key(key_row("k1"))
    first = await repo.put("cluster/a/kubeconfig", "k1", "v1:aaa")
    await repo.put("cluster/a/token", "k1", "v1:bbb")
    await repo.put("cluster/b/kubeconfig", "k1", "v1:ccc")
    again = await repo.put("cluster/a/kubeconfig", "k1", "v1:ddd")
    assert again.sealed == "v1:ddd" and again.created_at == first.created_at
    assert [s.name for s in await repo.list("cluster/a/")] == [
        "cluster/a/kubeconfig",
        "cluster/a/token",
    ]
    assert await repo.delete("cluster/a/token") is True
    assert await repo.delete("cluster/a/token") is False
    with pytest.raises(NotFound):
        await repo.get("cluster/a/token")


async def test_repository_refuses_a_retired_data_key(store: Store) -> None:
    with pytest.raises(Conflict, match="retired"):
        await store.secrets.put("x", "never-stored", "v1:zzz")


async def test_repository_rotation_is_one_transaction(store: Store) -> None:
    repo = store.secrets
    await repo.add_key(key_row("k1"))
    a = await repo.put("a", "k1", "v1:a-old")
    b = await repo.put("b", "k1", "v1:b-old")

    def moved(s: SealedSecret) -> SealedSecret:
        return SealedSecret(
            name=s.name,
            key_id="k2",
            sealed=s.sealed + "-new",
            created_at=s.created_at,
            updated_at=s.updated_at,
        )

    # b changed after it was read: nothing of the rotation may stay behind.
    await repo.put("b", "k1", "v1:b-changed")
    with pytest.raises(Conflict, match="'b' changed"):
        await repo.rotate(key_row("k2"), [(a, moved(a)), (b, moved(b))])
    assert [k.id for k in await repo.keys()] == ["k1"]
    assert (await repo.get("a")).sealed == "v1:a-old"

    b = await repo.get("b")
    assert await repo.rotate(key_row("k2"), [(a, moved(a)), (b, moved(b))]) == 1
    assert [k.id for k in await repo.keys()] == ["k2"]
    assert {(s.name, s.key_id) for s in await repo.list()} == {("a", "k2"), ("b", "k2")}


async def test_values_round_trip_sealed_under_one_data_key(store: Store) -> None:
    secrets = SecretsStore(store.secrets, KEK)
    await secrets.put("cluster/lab/kubeconfig", KUBECONFIG)
    await secrets.put("cluster/lab/token", b"K10abc::server:xyz")
    assert await secrets.get("cluster/lab/kubeconfig") == KUBECONFIG
    rows = await store.secrets.list()
    assert len({r.key_id for r in rows}) == 1
    assert all(b"very-secret" not in r.sealed.encode() for r in rows)
    keys = await store.secrets.keys()
    assert [k.kek_id for k in keys] == [KEK.kek_id]
    # A second labd (replica) with the same key-encryption key reads it.
    assert await SecretsStore(store.secrets, KEK).get("cluster/lab/token") == b"K10abc::server:xyz"
    assert await secrets.names("cluster/lab/") == ["cluster/lab/kubeconfig", "cluster/lab/token"]
    assert await secrets.delete("cluster/lab/token") is True
    with pytest.raises(NotFound):
        await secrets.get("cluster/lab/token")


async def test_rotate_keeps_values_readable_under_a_new_data_key(store: Store) -> None:
    secrets = SecretsStore(store.secrets, KEK)
    await secrets.put("a", b"alpha")
    await secrets.put("b", b"beta")
    before = {r.name: r for r in await store.secrets.list()}
    done = await secrets.rotate()
    after = {r.name: r for r in await store.secrets.list()}
    assert done.resealed == 2 and done.dropped == 1
    assert {r.key_id for r in after.values()} == {done.key_id}
    assert all(after[n].sealed != before[n].sealed for n in before)
    assert [k.id for k in await store.secrets.keys()] == [done.key_id]
    # Fresh instances (no cached data keys) read the re-sealed values.
    fresh = SecretsStore(store.secrets, KEK)
    assert (await fresh.get("a"), await fresh.get("b")) == (b"alpha", b"beta")
    # A labd that cached the old data key writes again after the rotation retired it.
    await secrets.put("c", b"gamma")
    assert (await store.secrets.get("c")).key_id == done.key_id


async def test_wrong_key_encryption_key_is_named(store: Store) -> None:
    await SecretsStore(store.secrets, KEK).put("a", b"alpha")
    wrong = SecretsStore(store.secrets, OTHER_KEK)
    with pytest.raises(pki.WrongSecretsKey, match="key-encryption key") as exc:
        await wrong.get("a")
    assert exc.value.details["kek_id"] == KEK.kek_id
    assert exc.value.details["have"] == OTHER_KEK.kek_id
    with pytest.raises(pki.WrongSecretsKey):
        await wrong.check()
    with pytest.raises(pki.WrongSecretsKey):  # and it does not start a key of its own
        await wrong.put("b", b"beta")
    assert len(await store.secrets.keys()) == 1


async def test_rotation_rewraps_under_a_new_key_encryption_key(store: Store) -> None:
    await SecretsStore(store.secrets, KEK).put("a", b"alpha")
    moved = SecretsStore(store.secrets, OTHER_KEK, previous=[KEK])
    await moved.rotate()
    assert [k.kek_id for k in await store.secrets.keys()] == [OTHER_KEK.kek_id]
    assert await SecretsStore(store.secrets, OTHER_KEK).get("a") == b"alpha"
    with pytest.raises(pki.WrongSecretsKey):
        await SecretsStore(store.secrets, KEK).get("a")


async def test_a_value_copied_onto_another_name_does_not_open(store: Store) -> None:
    secrets = SecretsStore(store.secrets, KEK)
    await secrets.put("cluster/a/token", b"token-of-a")
    row = await store.secrets.get("cluster/a/token")
    await store.secrets.put("cluster/b/token", row.key_id, row.sealed)
    with pytest.raises(pki.WrongSecretsKey, match="altered or belongs to another name"):
        await secrets.get("cluster/b/token")


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/../b/", "sp ace", "x" * 254, "a/"])
async def test_bad_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(Invalid) as exc:
        await SecretsStore(store.secrets, KEK).put(name, b"v")
    assert exc.value.details["fields"] == ["name"]


async def test_values_are_bounded(store: Store) -> None:
    with pytest.raises(TooLarge):
        await SecretsStore(store.secrets, KEK).put("big", b"x" * (1024 * 1024 + 1))


async def test_power_passwords_sealed_in_their_rows_move_to_the_secrets_store(
    store: Store,
) -> None:
    from lab.labd.secrets.power import SECRET_MARK, move_power_passwords
    from lab.store import PowerSetting

    legacy_key = b"k" * 32
    for target, key in (("machine/52:54:00:12:34:56", legacy_key), ("server/x", b"o" * 32)):
        await store.power.set(
            PowerSetting(
                target=target,
                driver="ipmi",
                settings={"host": "10.0.0.5"},
                sealed=pki.seal(key, target, f"pw-of-{target}"),
            )
        )
    await store.power.set(PowerSetting(target="server/wol", driver="wol", settings={}))
    secrets = SecretsStore(store.secrets, KEK)
    assert await move_power_passwords(store, secrets, legacy_key) == 1
    moved = await store.power.get("machine/52:54:00:12:34:56")
    assert moved.sealed == SECRET_MARK
    assert await secrets.get("power/machine/52:54:00:12:34:56/password") == (
        b"pw-of-machine/52:54:00:12:34:56"
    )
    # The row sealed under another key stays as it was; the one without a password too.
    assert (await store.power.get("server/x")).sealed.startswith("v1:")
    assert (await store.power.get("server/wol")).sealed == ""
    assert [s.target for s in await store.power.sealed_in_row()] == ["server/x"]
    assert await move_power_passwords(store, secrets, legacy_key) == 0
    assert not await store.power.replace_sealed("server/x", "v1:other", SECRET_MARK)
