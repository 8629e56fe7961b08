"""An apply (or any grant) judged by ``rbac.covers`` must not let a caller write an allow rule
that reaches what one of its own deny rules forbids.

Two patterns can match a common value without either matching the other read as a value:
``server/web-*`` and ``server/*-prod`` both match ``server/web-prod``. A caller denied
``server/web-*`` writing ``allow … server/*-prod`` into a role it then holds would get
``server/web-prod`` back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from lab.labd.access import rbac
from lab.model import Effect, Permission, Role
from tests.apply.rig import apply, role, user_with_roles
from tests.labd.harness import running_labd


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("server/web-*", "server/*-prod", True),
        ("*a", "b*", True),
        ("a*b*c", "*b*", True),
        ("x*", "y*", False),
        ("*a", "*b", False),
        ("server/web", "server/web", True),
        ("server/web", "server/db", False),
        ("ab*", "*ba", True),
        ("a*", "", False),
        ("*", "", True),
    ],
)
def test_two_patterns_overlap_when_one_value_matches_both(a: str, b: str, overlap: bool) -> None:
    assert rbac._overlap(a, b) is overlap
    assert rbac._overlap(b, a) is overlap


def test_an_allow_crossing_a_held_deny_is_not_covered() -> None:
    held = Role(
        name="ops",
        permissions=(
            Permission(effect=Effect.ALLOW, action="servers:*", resource="server/*"),
            Permission(effect=Effect.DENY, action="servers:*", resource="server/web-*"),
        ),
    )
    crossing = Permission(effect=Effect.ALLOW, action="servers:*", resource="server/*-prod")
    assert not rbac.decide([held], "servers:exec", "server/web-prod").allowed
    assert not rbac.covers([held], crossing)
    beside = Permission(effect=Effect.ALLOW, action="servers:*", resource="server/db-*")
    assert rbac.covers([held], beside)


async def test_apply_refuses_a_role_that_reaches_past_the_callers_deny(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            ops = await user_with_roles(
                labd,
                admin,
                "ops",
                ("allow", "servers:*", "server/*"),
                ("deny", "servers:*", "server/web-*"),
                ("allow", "roles:*", "role/ops-extra"),
                ("allow", "apply:run", "apply/*"),
            )
            async with labd.client(ops) as http:
                resp = await apply(
                    http, role("ops-extra", "", ("allow", "servers:*", "server/*-prod"))
                )
                assert resp.status_code == 403, resp.text
                assert resp.json()["error"]["details"]["reason"] == "escalation"
                resp = await apply(
                    http, role("ops-extra", "", ("allow", "servers:*", "server/db-*"))
                )
                assert resp.status_code == 200, resp.text
