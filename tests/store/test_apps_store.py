"""App releases on SQLite and PostgreSQL: revisions numbered per release, the release lock as a
lease (the holder named, a lease that ran out fails the revision it left), superseded on deploy,
history trimmed to history_max, a release and its revisions forgotten together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from lab.errors import Conflict, NotFound
from lab.model.apps import AppRevision, ObjectRef, ReleaseKey
from lab.store import Store

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = ReleaseKey(cluster="home", namespace="db", name="crdb")
LEASE = T0 + timedelta(seconds=30)
CM = ObjectRef(api_version="v1", kind="ConfigMap", namespace="db", name="crdb-cfg")
STS = ObjectRef(api_version="apps/v1", kind="StatefulSet", namespace="db", name="crdb")


def revision(status: str = "pending-install", operation: str = "install") -> AppRevision:
    return AppRevision(
        key=KEY,
        revision=0,
        module="cockroachdb",
        version="1.0.0",
        module_digest="a" * 64,
        values={"replicas": 3, "tls": {"node_key": "<sealed>"}},
        secret_ref="app/home/db/crdb/values",
        manifest="",
        manifest_digest="b" * 64,
        status=status,  # type: ignore[arg-type]
        operation=operation,  # type: ignore[arg-type]
        requested_by="user/admin",
        request_id="req-1",
        created_at=T0,
    )


async def test_install_upgrade_supersede_and_history(store: Store) -> None:
    apps = store.apps
    await apps.lock(
        KEY, owner="r1:op1", operation="install", who="user/admin", now=T0, lease_until=LEASE
    )
    first = await apps.add(revision(), "r1:op1")
    assert first.revision == 1 and first.status == "pending-install"
    assert first.values == {"replicas": 3, "tls": {"node_key": "<sealed>"}}
    deployed = await apps.set_status(
        KEY,
        1,
        "r1:op1",
        status="deployed",
        at=T0,
        inventory=(CM, STS),
        description="Install complete",
    )
    assert deployed.inventory == (CM, STS)
    await apps.unlock(KEY, "r1:op1")

    await apps.lock(
        KEY, owner="r1:op2", operation="upgrade", who="user/admin", now=T0, lease_until=LEASE
    )
    second = await apps.add(revision("pending-upgrade", "upgrade"), "r1:op2")
    assert second.revision == 2
    await apps.set_status(KEY, 2, "r1:op2", status="deployed", at=T0, inventory=(STS,))
    await apps.unlock(KEY, "r1:op2")

    history = await apps.history(KEY)
    assert [(r.revision, r.status, r.operation) for r in history] == [
        (1, "superseded", "install"),
        (2, "deployed", "upgrade"),
    ]
    assert (await apps.get(KEY)).revision == 2
    assert (await apps.get(KEY, 1)).inventory == (CM, STS)
    with pytest.raises(NotFound, match="revision 9"):
        await apps.get(KEY, 9)
    assert [r.key.name for r in await apps.releases(cluster="home")] == ["crdb"]
    assert await apps.releases(cluster="other") == []


async def test_the_lock_names_its_holder_and_guards_writes(store: Store) -> None:
    apps = store.apps
    await apps.lock(
        KEY, owner="r1:op1", operation="upgrade", who="user/alice", now=T0, lease_until=LEASE
    )
    with pytest.raises(Conflict, match="another operation is running: upgrade by user/alice") as c:
        await apps.lock(
            KEY, owner="r2:op2", operation="upgrade", who="user/bob", now=T0, lease_until=LEASE
        )
    assert c.value.details["owner"] == "r1:op1"
    # Writes by someone who does not hold the release are refused.
    with pytest.raises(Conflict, match="no longer holds"):
        await apps.add(revision(), "r2:op2")
    assert await apps.renew(KEY, "r1:op1", lease_until=LEASE + timedelta(seconds=30))
    assert not await apps.renew(KEY, "r2:op2", lease_until=LEASE)
    holder = await apps.holder(KEY)
    assert holder is not None and holder.who == "user/alice"
    await apps.unlock(KEY, "r2:op2")  # not the holder: nothing happens
    assert (await apps.holder(KEY)) is not None
    await apps.unlock(KEY, "r1:op1")
    assert await apps.holder(KEY) is None
    await apps.lock(
        KEY, owner="r2:op2", operation="upgrade", who="user/bob", now=T0, lease_until=LEASE
    )


async def test_a_lease_that_ran_out_fails_its_revision_and_frees_the_release(store: Store) -> None:
    apps = store.apps
    await apps.lock(
        KEY, owner="r1:op1", operation="install", who="user/admin", now=T0, lease_until=LEASE
    )
    await apps.add(revision(), "r1:op1")
    # Not yet run out: nothing expires.
    assert await apps.expire(now=T0 + timedelta(seconds=10)) == []
    expired = await apps.expire(now=LEASE + timedelta(seconds=1))
    assert [(e.key, e.revision, e.owner, e.operation) for e in expired] == [
        (KEY, 1, "r1:op1", "install")
    ]
    failed = await apps.get(KEY, 1)
    assert failed.status == "failed"
    assert "interrupted: the install of user/admin stopped" in failed.description
    assert await apps.holder(KEY) is None
    # The old owner's late writes are refused; the next operation proceeds.
    with pytest.raises(Conflict):
        await apps.set_status(KEY, 1, "r1:op1", status="deployed", at=T0)
    later = LEASE + timedelta(seconds=2)
    await apps.lock(
        KEY,
        owner="r2:op2",
        operation="install",
        who="user/admin",
        now=later,
        lease_until=later + timedelta(seconds=30),
    )
    assert (await apps.add(attrs.evolve(revision(), created_at=later), "r2:op2")).revision == 2


async def test_a_restarted_owner_fails_what_it_held(store: Store) -> None:
    apps = store.apps
    await apps.lock(
        KEY, owner="r1:op1", operation="upgrade", who="user/admin", now=T0, lease_until=LEASE
    )
    await apps.add(revision("pending-upgrade", "upgrade"), "r1:op1")
    expired = await apps.expire(now=T0, owner="r1:op1")
    assert [e.revision for e in expired] == [1]
    assert (await apps.get(KEY)).status == "failed"


async def test_history_is_trimmed_but_the_deployed_revision_kept(store: Store) -> None:
    apps = store.apps
    await apps.lock(
        KEY, owner="o", operation="install", who="u", now=T0, lease_until=LEASE, history_max=3
    )
    await apps.add(revision(), "o")
    await apps.set_status(KEY, 1, "o", status="deployed", at=T0)
    for _ in range(4):
        rev = await apps.add(revision("pending-upgrade", "upgrade"), "o")
        await apps.set_status(KEY, rev.revision, "o", status="failed", at=T0)
    dropped = await apps.trim(KEY, "o")
    assert [r.revision for r in dropped] == [2]
    assert [r.revision for r in await apps.history(KEY)] == [1, 3, 4, 5]
    gone = await apps.delete(KEY, "o")
    assert len(gone) == 4
    assert await apps.history(KEY) == []
    assert await apps.holder(KEY) is None
