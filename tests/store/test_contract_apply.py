"""labctl apply's storage on both backends: one transaction per plan (all or nothing, audit
entries included), moved objects refused, the last admin kept, inventories per set."""

from __future__ import annotations

import pytest

from lab.errors import Conflict, NotFound
from lab.model import AuditEntry, Role, Server, User
from lab.model.declared import Change, Claim, Declared, ObjectKey, Plan
from lab.store import Store, audit_next_change

ROLE = ObjectKey(kind="Role", name="ops")
ANN = ObjectKey(kind="User", name="ann")


def _role(description: str = "ops people") -> Declared:
    rules = [{"effect": "allow", "action": "servers:*", "resource": "server/*"}]
    spec = {"description": description, "rules": rules, "kubernetes_groups": []}
    return Declared(kind="Role", name="ops", spec=spec)


def _user(roles: list[str], disabled: bool = False) -> Declared:
    return Declared(kind="User", name="ann", spec={"roles": roles, "disabled": disabled})


def _create(*objs: Declared, set_name: str | None = "lab") -> Plan:
    return Plan(
        set_name=set_name,
        changes=tuple(Change(action="create", before=None, after=o, fields=("*",)) for o in objs),
        seen=tuple((o.key, None) for o in objs),
        claims=tuple(Claim(key=o.key, owner=None, applied={"spec": o.spec}) for o in objs)
        if set_name
        else (),
        who="user/admin",
    )


async def test_plan_commits_whole_with_one_audit_entry_per_change(store: Store) -> None:
    pending = audit_next_change(lambda: AuditEntry(action="apply", resource="apply/lab"))
    pending.more = lambda first: [
        AuditEntry(user=first.user, action="apply:create", resource=r)
        for r in ("role/ops", "user/ann")
    ]
    versions = await store.apply.commit(_create(_role(), _user(["ops"])))
    assert versions == {"role/ops": _role().version, "user/ann": _user(["ops"]).version}
    now = await store.apply.current([ROLE, ANN])
    assert now[ROLE] == _role() and now[ANN] == _user(["ops"])
    # The self-service rule labd adds first is stored, and left out of the declared form.
    assert len((await store.roles.get("ops")).permissions) == 2
    entries = await store.audit.list(action=None)
    assert [(e.action, e.resource) for e in entries[-3:]] == [
        ("apply", "apply/lab"),
        ("apply:create", "role/ops"),
        ("apply:create", "user/ann"),
    ]
    rows = await store.apply.inventory("lab")
    assert sorted(str(r.key) for r in rows) == ["role/ops", "user/ann"]


async def test_a_failing_change_writes_nothing(store: Store) -> None:
    before = await store.audit.last_seq()
    audit_next_change(lambda: AuditEntry(action="apply", resource="apply/lab"))
    # The user names a role that exists nowhere: the role created before it must go too.
    with pytest.raises(NotFound):
        await store.apply.commit(_create(_role(), _user(["nope"])))
    assert await store.apply.current([ROLE, ANN]) == {}
    assert await store.apply.inventory("lab") == []
    assert await store.audit.last_seq() == before


async def test_an_object_that_moved_since_the_plan_is_refused(store: Store) -> None:
    await store.apply.commit(_create(_role()))
    stale = _role()
    # Someone else changes the description through the ordinary route.
    role = await store.roles.get("ops")
    await store.roles.upsert(
        Role(name="ops", description="changed by hand", permissions=role.permissions)
    )
    plan = Plan(
        set_name="lab",
        changes=(Change(action="update", before=stale, after=_role("mine"), fields=("spec",)),),
        seen=((ROLE, stale),),
    )
    with pytest.raises(Conflict) as caught:
        await store.apply.commit(plan)
    assert caught.value.details["fields"] == ["spec.description"]
    assert (await store.roles.get("ops")).description == "changed by hand"
    # --force-conflicts writes it anyway.
    await store.apply.commit(Plan(set_name="lab", changes=plan.changes, seen=plan.seen, force=True))
    assert (await store.roles.get("ops")).description == "mine"


async def test_the_last_enabled_admin_stays(store: Store) -> None:
    admin = await store.users.create(User(name="root"))
    await store.users.grant(admin.id, "admin")
    current = (await store.apply.current([ObjectKey(kind="User", name="root")]))[
        ObjectKey(kind="User", name="root")
    ]
    disabled = Declared(kind="User", name="root", spec={"roles": ["admin"], "disabled": True})
    plan = Plan(
        set_name=None,
        changes=(
            Change(action="prune", before=current, after=disabled, fields=("spec.disabled",)),
        ),
        seen=((current.key, current),),
    )
    with pytest.raises(Conflict) as caught:
        await store.apply.commit(plan)
    assert caught.value.details["reason"] == "last_admin"
    assert not (await store.users.get_by_name("root")).disabled


async def test_server_labels_are_set_exactly_and_other_sets_are_kept_apart(store: Store) -> None:
    await store.servers.create(Server(name="web1", labels={"old": "x"}))
    web = Declared(kind="Server", name="web1", labels={"role": "web"})
    cur = (await store.apply.current([web.key]))[web.key]
    plan = Plan(
        set_name="a",
        changes=(Change(action="update", before=cur, after=web, fields=("metadata.labels",)),),
        seen=((web.key, cur),),
        claims=(Claim(key=web.key, owner=None, applied={"labels": {"role": "web"}}),),
    )
    await store.apply.commit(plan)
    assert (await store.servers.get_by_name("web1")).labels == {"role": "web"}
    # Set b planned while nobody owned it, but a owns it now: refused.
    claim_b = Plan(set_name="b", claims=(Claim(key=web.key, owner=None),))
    with pytest.raises(Conflict):
        await store.apply.commit(claim_b)
    assert [r.set_name for r in await store.apply.inventory(None, [web.key])] == ["a"]
