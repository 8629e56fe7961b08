"""labd's apply plan, pure: the changes and their order, the RBAC questions each asks, stale
versions and other sets' objects refused, prune and delete (roles deleted, users disabled,
servers losing only the labels the set declared), and what the set records."""

from __future__ import annotations

from typing import Any

import pytest

from lab.errors import Conflict, Invalid, NotFound
from lab.labd.apply.plan import Outcome, Wanted, plan_apply
from lab.model.declared import Claim, Declared, InventoryRow, ObjectKey


def role(name: str, *rules: str, groups: tuple[str, ...] = (), builtin: bool = False) -> Declared:
    spec = {
        "rules": [{"effect": "allow", "action": a, "resource": "*"} for a in rules],
        "kubernetes_groups": list(groups),
    }
    return Declared(kind="Role", name=name, spec=spec, builtin=builtin)


def user(name: str, *roles: str, disabled: bool = False) -> Declared:
    return Declared(kind="User", name=name, spec={"roles": list(roles), "disabled": disabled})


def server(name: str, **labels: str) -> Declared:
    return Declared(kind="Server", name=name, labels=labels)


def key(kind: str, name: str) -> ObjectKey:
    return ObjectKey(kind=kind, name=name)


def want(obj: Declared, rv: str | None = None, where: str = "") -> Wanted:
    return Wanted(key=obj.key, obj=obj, resource_version=rv, where=where)


def plan(
    wanted: list[Wanted],
    current: list[Declared] = (),  # type: ignore[assignment]
    inventory: list[InventoryRow] = (),  # type: ignore[assignment]
    **kw: Any,
) -> Outcome:
    options: dict[str, Any] = {
        "set_name": "lab",
        "prune": False,
        "force": False,
        "mode": "apply",
        "who": "user/admin",
    }
    return plan_apply(wanted, {o.key: o for o in current}, inventory, **options | kw)


def changes(outcome: Outcome) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.action, str(c.key), c.fields) for c in outcome.plan.changes]


def test_creating_a_role_and_a_user_granted_it() -> None:
    ops = role("ops", "servers:get", groups=("viewers",))
    ann = user("ann", "ops")
    out = plan([want(ann), want(ops)])
    assert changes(out) == [("create", "role/ops", ("*",)), ("create", "user/ann", ("*",))]
    assert out.checks == (
        ("roles:create", "role/ops"),
        ("users:create", "user/ann"),
        ("users:grant", "user/ann"),
        ("roles:get", "role/ops"),
        ("users:get", "user/ann"),
    )
    assert out.grants == ((key("User", "ann"), "ops"),)
    assert out.rules == ((key("Role", "ops"), ops.spec["rules"][0]),)
    assert out.groups == ((key("Role", "ops"), "viewers"),)
    assert out.plan.claims == (
        Claim(key=key("User", "ann"), owner=None, applied={"spec": ann.spec}),
        Claim(key=key("Role", "ops"), owner=None, applied={"spec": ops.spec}),
    )
    assert out.plan.seen == ((key("Role", "ops"), None), (key("User", "ann"), None))
    assert (out.plan.set_name, out.plan.who, out.plan.force) == ("lab", "user/admin", False)
    assert out.unchanged == () and out.plan.release == () and out.prune_external == ()


def test_an_unchanged_object_asks_only_to_be_read() -> None:
    ops = role("ops", "a")
    out = plan([want(ops, ops.version)], [ops])
    assert changes(out) == [] and out.unchanged == (ops.key,)
    assert out.checks == (("roles:get", "role/ops"),)
    assert out.plan.seen == ((ops.key, ops),)


def test_updates_ask_for_what_they_change() -> None:
    before = [user("ann", "ops", "dev"), user("bob", disabled=True), user("cy"), role("ops", "a"),
              role("dev", "b"), role("qa", "c"), server("s1", zone="a")]  # fmt: skip
    out = plan(
        [
            want(user("ann", "dev", "qa")),
            want(user("bob")),
            want(user("cy", disabled=True)),
            want(role("ops", "a", "z", groups=("g1",))),
            want(server("s1", zone="b", rack="1")),
        ],
        before,
    )
    assert changes(out) == [
        ("update", "role/ops", ("spec.kubernetes_groups", "spec.rules")),
        ("update", "user/ann", ("spec.roles",)),
        ("update", "user/bob", ("spec.disabled",)),
        ("update", "user/cy", ("spec.disabled",)),
        ("update", "server/s1", ("metadata.labels.rack", "metadata.labels.zone")),
    ]
    assert out.checks[:6] == (
        ("roles:update", "role/ops"),
        ("users:grant", "user/ann"),
        ("users:ungrant", "user/ann"),
        ("users:enable", "user/bob"),
        ("users:disable", "user/cy"),
        ("servers:label", "server/s1"),
    )
    assert out.grants == ((key("User", "ann"), "qa"),)
    assert [r["action"] for _, r in out.rules] == ["a", "z"]  # every rule written is asked
    assert out.groups == ((key("Role", "ops"), "g1"),)
    assert all(c.before is not None for c in out.plan.changes)


def test_a_stale_resource_version_names_what_moved() -> None:
    old = user("ann", "ops")
    now = user("ann", "ops", "dev")
    doc = user("ann", disabled=True)
    roles = [role("ops"), role("dev")]
    with pytest.raises(Conflict) as caught:
        plan([want(doc, old.version, where="users.yaml#1")], [now, *roles])
    assert str(caught.value) == (
        f"users.yaml#1: user/ann changed since resourceVersion {old.version} (now {now.version}):"
        " spec.disabled, spec.roles moved; apply --force-conflicts to overwrite"
    )
    assert caught.value.details == {
        "object": "user/ann",
        "fields": ["spec.disabled", "spec.roles"],
        "reason": "stale",
        "resourceVersion": now.version,
    }
    # with the set's record of what it applied at that version: only what moved since
    row = InventoryRow(key=old.key, set_name="lab", applied={"spec": old.spec})
    with pytest.raises(Conflict) as caught:
        plan([want(doc, old.version)], [now, *roles], [row])
    assert caught.value.details["fields"] == ["spec.roles"]
    # a record of another version is no base
    other = InventoryRow(key=old.key, set_name="lab", applied={"spec": user("ann", "qa").spec})
    with pytest.raises(Conflict) as caught:
        plan([want(doc, old.version)], [now, *roles], [other])
    assert caught.value.details["fields"] == ["spec.disabled", "spec.roles"]
    # nothing differs from the base: the whole object is named
    with pytest.raises(Conflict) as caught:
        plan([want(now, old.version)], [now, *roles])
    assert caught.value.details["fields"] == ["*"]
    # forced, the same apply goes through
    forced = plan([want(doc, old.version)], [now, *roles], [row], force=True)
    assert changes(forced) == [("update", "user/ann", ("spec.disabled", "spec.roles"))]
    assert forced.plan.force is True
    assert plan([want(now, now.version)], [now, *roles]).unchanged == (now.key,)


def test_an_object_deleted_since_its_version() -> None:
    with pytest.raises(Conflict) as caught:
        plan([want(role("ops"), "abc")])
    assert str(caught.value) == "role/ops was deleted since resourceVersion abc"
    assert caught.value.details == {"object": "role/ops", "fields": ["*"], "reason": "stale"}


def test_another_sets_object_is_refused_unless_forced_or_setless() -> None:
    ops = role("ops", "a")
    row = InventoryRow(key=ops.key, set_name="other")
    with pytest.raises(Conflict) as caught:
        plan([want(ops, where="f#0")], [], [row])
    assert str(caught.value) == "f#0: role/ops belongs to apply set 'other'"
    assert caught.value.details == {"object": "role/ops", "set": "other", "reason": "other_set"}
    taken = plan([want(ops)], [], [row], force=True)
    assert taken.plan.claims == (Claim(key=ops.key, owner="other", applied={"spec": ops.spec}),)
    setless = plan([want(ops)], [], [row], set_name=None)
    assert changes(setless) == [("create", "role/ops", ("*",))] and setless.plan.claims == ()


def test_refusals_before_anything_is_written() -> None:
    with pytest.raises(NotFound) as nf:
        plan([want(server("s9", zone="a"), where="f#2")])
    assert str(nf.value).startswith("f#2: server 's9' is not enrolled")
    assert nf.value.details == {"object": "server/s9", "fields": ["metadata.name"]}
    with pytest.raises(Invalid) as inv:
        plan([want(user("ann", "ghost"))], [role("ops")])
    assert str(inv.value) == "spec.roles: unknown role 'ghost'"
    assert inv.value.details == {"object": "user/ann", "fields": ["spec.roles"]}
    admin = role("admin", "*", builtin=True)
    with pytest.raises(Conflict) as builtin:
        plan([want(role("admin", "x"))], [admin])
    assert "role 'admin' is builtin" in str(builtin.value)
    assert builtin.value.details["reason"] == "builtin"
    assert plan([want(role("admin", "*"))], [admin]).unchanged == (admin.key,)


def test_a_server_document_claims_its_labels() -> None:
    s1 = server("s1", zone="a")
    out = plan([want(server("s1", zone="a", rack="2"))], [s1])
    assert out.plan.claims[0].applied == {"labels": {"zone": "a", "rack": "2"}}


def test_external_kinds_ask_what_their_operation_asks() -> None:
    def ext(kind: str, name: str, spec: dict[str, Any]) -> Wanted:
        return Wanted(key=key(kind, name), obj=None, applied={"spec": spec})

    out = plan(
        [
            ext("Cluster", "home", {"kubeconfig": {"file": "x"}}),
            ext("Cluster", "new", {"create": {"servers": ["a"]}}),
            ext("App", "web", {"cluster": "home", "namespace": "apps"}),
            ext("App", "db", {"cluster": "home"}),
            ext("Machine", "m1", {"mac": "52-54-00-AB-CD-EF"}),
            ext("Machine", "m2", {"mac": "bad"}),
        ]
    )
    assert out.checks == (
        ("clusters:import", "cluster/home"),
        ("clusters:create", "cluster/new"),
        ("apps:install", "cluster/home/namespace/apps/app/web"),
        ("apps:install", "cluster/home/namespace/default/app/db"),
        ("provision:install", "machine/52:54:00:ab:cd:ef"),
        ("provision:install", "machine/bad"),
    )
    assert changes(out) == [] and out.plan.claims[0].applied == {
        "spec": {"kubeconfig": {"file": "x"}}
    }
    gone = plan([ext("Cluster", "home", {}), ext("App", "web", {})], mode="delete")
    assert gone.checks == (
        ("clusters:delete", "cluster/home"),
        ("apps:uninstall", "cluster//namespace/default/app/web"),
    )
    assert gone.plan.claims == ()


def test_delete_removes_roles_disables_users_and_drops_only_declared_labels() -> None:
    current = [
        role("ops", "a"),
        user("ann", "ops"),
        server("s1", zone="a", rack="1"),
        user("off", disabled=True),
    ]
    out = plan(
        [
            want(role("ops")),
            want(user("ann")),
            want(server("s1", zone="x")),
            want(user("off")),
            want(role("gone")),
        ],
        current,
        mode="delete",
    )
    assert changes(out) == [
        ("delete", "user/ann", ("spec.disabled",)),
        ("delete", "server/s1", ("metadata.labels.zone",)),
        ("delete", "role/ops", ("*",)),
    ]
    assert out.plan.changes[1].after == server("s1", rack="1")
    assert out.plan.changes[0].after == user("ann", "ops", disabled=True)
    assert out.unchanged == (key("User", "off"), key("Role", "gone"))
    assert out.checks[:3] == (
        ("users:disable", "user/ann"),
        ("servers:label", "server/s1"),
        ("roles:delete", "role/ops"),
    )
    assert out.plan.claims == () and out.grants == () and out.rules == ()
    # a role still held by a user in this delete is not "declared": the user's roles stand
    assert plan([want(user("ann", "ops"))], current, mode="delete").plan.changes


def test_prune_takes_back_what_the_set_applied_and_the_files_dropped() -> None:
    current = [role("old", "a"), user("bob", "old"), server("s1", zone="a", rack="1"), role("keep")]
    inventory = [
        InventoryRow(key=key("Role", "old"), set_name="lab", applied={"spec": {}}),
        InventoryRow(key=key("User", "bob"), set_name="lab", applied={"spec": {}}),
        InventoryRow(key=key("Server", "s1"), set_name="lab", applied={"labels": {"zone": "a"}}),
        InventoryRow(key=key("Role", "keep"), set_name="lab"),
        InventoryRow(key=key("Role", "theirs"), set_name="other"),
        InventoryRow(key=key("Role", "vanished"), set_name="lab"),
        InventoryRow(key=key("App", "web"), set_name="lab", applied={"spec": {"cluster": "c"}}),
    ]
    out = plan([want(role("keep"))], current, inventory, prune=True)
    assert changes(out) == [
        ("prune", "user/bob", ("spec.disabled",)),
        ("prune", "server/s1", ("metadata.labels.zone",)),
        ("prune", "role/old", ("*",)),
    ]
    assert out.plan.release == (
        key("App", "web"),
        key("Role", "old"),
        key("Role", "vanished"),
        key("Server", "s1"),
        key("User", "bob"),
    )
    assert out.prune_external == (inventory[-1],)
    assert ("apps:uninstall", "cluster/c/namespace/default/app/web") in out.checks
    assert ("roles:delete", "role/old") in out.checks
    # without --prune, or without a set, or deleting: nothing is taken back
    for kw in ({"prune": False}, {"set_name": None}, {"mode": "delete"}):
        quiet = plan([want(role("keep"))], current, inventory, **{"prune": True} | kw)
        assert quiet.plan.release == () and quiet.prune_external == ()
        assert all(c.action != "prune" for c in quiet.plan.changes)


def test_checks_are_asked_once_each_in_order() -> None:
    out = plan([want(role("a", "x")), want(role("b", "y"))])
    assert out.checks == (
        ("roles:create", "role/a"),
        ("roles:create", "role/b"),
        ("roles:get", "role/a"),
        ("roles:get", "role/b"),
    )
    twice = plan([want(user("ann", "ops", "dev"))], [user("ann"), role("ops"), role("dev")])
    assert twice.checks.count(("users:grant", "user/ann")) == 1
    assert twice.grants == ((key("User", "ann"), "ops"), (key("User", "ann"), "dev"))


def test_a_server_stale_against_the_labels_the_set_applied() -> None:
    old = server("s1", zone="a")
    now = server("s1", zone="a", rack="1")
    row = InventoryRow(key=old.key, set_name="lab", applied={"labels": {"zone": "a"}})
    with pytest.raises(Conflict) as caught:
        plan([want(server("s1", zone="b"), old.version)], [now], [row])
    assert caught.value.details["fields"] == ["metadata.labels.rack"]
    # a role's record has no labels, a server's no spec: neither is needed
    ops, ops_now = role("ops", "a"), role("ops", "b")
    role_row = InventoryRow(key=ops.key, set_name="lab", applied={"spec": ops.spec})
    with pytest.raises(Conflict) as caught:
        plan([want(role("ops", "c"), ops.version)], [ops_now], [role_row])
    assert caught.value.details["fields"] == ["spec.rules"]


def test_reads_and_messages_of_each_kind() -> None:
    s1 = server("s1")
    out = plan([want(server("s1", zone="a")), want(role("r")), want(user("u", "r"))], [s1])
    assert out.checks[-3:] == (
        ("roles:get", "role/r"),
        ("servers:get", "server/s1"),
        ("users:get", "user/u"),
    )
    with pytest.raises(NotFound) as nf:
        plan([want(server("s9"))])
    assert str(nf.value) == (
        "server 's9' is not enrolled: a Server document only labels an enrolled server"
    )
    admin = role("admin", "*", builtin=True)
    with pytest.raises(Conflict) as builtin:
        plan([want(role("admin", "x"), where="f#1")], [admin])
    assert str(builtin.value) == "f#1: role 'admin' is builtin: labd restores it at every start"
    assert builtin.value.details == {
        "object": "role/admin",
        "fields": ["spec.rules"],
        "reason": "builtin",
    }


def test_an_unchanged_object_does_not_end_the_plan() -> None:
    ops = role("ops", "a")
    out = plan([want(ops), want(role("dev", "b"))], [ops])
    assert out.unchanged == (ops.key,) and changes(out) == [("create", "role/dev", ("*",))]


def test_only_roles_count_as_declared_roles() -> None:
    with pytest.raises(Invalid, match="unknown role 'bob'"):
        plan([want(user("ann", "bob")), want(user("bob"))])


def test_every_role_and_group_written_is_asked_for() -> None:
    a_before = role("a", "x", groups=("g1",))
    out = plan(
        [want(role("a", "x", groups=("g1", "g2"))), want(role("b", "y", groups=("g3",)))],
        [a_before],
    )
    assert [(str(k), r["action"]) for k, r in out.rules] == [("role/a", "x"), ("role/b", "y")]
    assert [(str(k), g) for k, g in out.groups] == [("role/a", "g2"), ("role/b", "g3")]


def test_machines_and_their_prune() -> None:
    def machine(name: str, applied: dict[str, Any]) -> Wanted:
        return Wanted(key=key("Machine", name), obj=None, applied=applied)

    out = plan([machine("m0", {}), machine("m1", {"spec": {}})])
    assert out.checks == (("provision:install", "machine/"),)  # asked once
    inventory = [
        InventoryRow(key=key("Machine", "m2"), set_name="lab", applied={"spec": {"mac": "bad"}}),
        InventoryRow(key=key("Cluster", "c"), set_name="lab", applied={}),
        InventoryRow(key=key("App", "a"), set_name="lab", applied={}),
        InventoryRow(key=key("Server", "s1"), set_name="lab", applied={}),
    ]
    pruned = plan(
        [machine("m1", {"spec": {"mac": "52:54:00:00:00:01"}})],
        [server("s1", a="1")],
        inventory,
        prune=True,
    )
    assert pruned.checks == (
        ("provision:install", "machine/52:54:00:00:00:01"),
        ("apps:uninstall", "cluster//namespace/default/app/a"),
        ("clusters:delete", "cluster/c"),
        ("provision:forget", "machine/bad"),
    )
    assert pruned.plan.changes == ()  # the set declared no label of s1
