"""RBAC patterns on their own: what ``*`` spans, what it may match, and what stays literal.

A deny rule is only as strong as its pattern: a ``*`` that stopped at ``:`` or needed at least
one character would quietly stop denying.
"""

from __future__ import annotations

import pytest

from lab.labd.access import rbac
from lab.model import Effect, Permission, Role

# pattern, value, matches
CASES = [
    # '*' spans ':' and '/' (an action with a sub-verb, a nested resource)
    ("exec:*", "exec:run:sudo", True),
    ("*:run", "exec:sub:run", True),
    ("server/*", "server/rack1/web", True),
    ("*", "a:b/c", True),
    ("a*c", "a:/c", True),
    # '*' matches nothing at all
    ("*", "", True),
    ("server/*", "server/", True),
    ("exec*", "exec", True),
    ("*exec", "exec", True),
    ("ex*ec", "exec", True),
    ("**", "", True),
    # and a newline: it is any run of characters
    ("server/*", "server/a\nb", True),
    ("*", "\n", True),
    # the empty pattern matches the empty value only
    ("", "", True),
    ("", "x", False),
    ("", ":", False),
    # whole values: no prefix, suffix or trailing-newline matches
    ("server/web", "server/web1", False),
    ("server/web", "xserver/web", False),
    ("server/web", "server/web\n", False),
    ("server/web*", "server/we", False),
    ("*web", "webx", False),
    ("a*b*c", "a-b-c-", False),
    ("a*b*c", "a-c-b", False),
    # case matters
    ("Server/*", "server/x", False),
    ("exec:RUN", "exec:run", False),
    ("exec:run", "exec:Run", False),
    # every other character is literal
    ("server/a.b", "server/axb", False),
    ("server/a.b", "server/a.b", True),
    ("a+", "aa", False),
    ("a?", "a", False),
    ("a?", "a?", True),
    ("[ab]", "a", False),
    ("(a|b)", "a", False),
    ("(a|b)", "(a|b)", True),
    ("a{2}", "aa", False),
    ("^a$", "^a$", True),
    ("a\\d", "a1", False),
    ("a\\d", "a\\d", True),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), CASES)
def test_matches(pattern: str, value: str, expected: bool) -> None:
    assert rbac.matches(pattern, value) is expected


def _role(name: str, *rules: tuple[str, str, str]) -> Role:
    perms = tuple(Permission(effect=Effect(e), action=a, resource=r) for e, a, r in rules)
    return Role(name=name, permissions=perms)


EVERYTHING = _role("all", ("allow", "*", "*"))


@pytest.mark.parametrize(
    ("deny", "action", "resource"),
    [
        (("deny", "exec:*", "*"), "exec:run:sudo", "server/web"),
        (("deny", "*", "server/*"), "logs:read", "server/rack1/db"),
        (("deny", "*", "server/db*"), "exec:run", "server/db"),
        (("deny", "exec*", "*"), "exec", ""),
        (("deny", "*", "*"), "", ""),
        (("deny", "*", "server/*"), "exec:run", "server/a\nb"),
    ],
)
def test_a_wildcard_deny_beats_allow_everywhere_it_matches(
    deny: tuple[str, str, str], action: str, resource: str
) -> None:
    decision = rbac.decide([EVERYTHING, _role("d", deny)], action, resource)
    assert decision.allowed is False
    assert str(decision.decided_by) == f"d: {' '.join(deny)}"
    assert [str(r) for r in decision.matched] == ["all: allow * *", f"d: {' '.join(deny)}"]


def test_a_deny_needs_both_its_patterns() -> None:
    deny = _role("d", ("deny", "exec:*", "server/db*"))
    assert rbac.decide([EVERYTHING, deny], "exec:run", "server/web").allowed
    assert rbac.decide([EVERYTHING, deny], "logs:read", "server/db1").allowed
    assert not rbac.decide([EVERYTHING, deny], "exec:run", "server/db1").allowed


def test_decision_carries_the_request_and_explains_itself() -> None:
    allow = _role("ops", ("allow", "exec:*", "server/*"))
    deny = _role("d", ("deny", "exec:*", "server/db"))

    allowed = rbac.decide([allow], "exec:run", "server/web")
    assert (allowed.allowed, allowed.action, allowed.resource) == (True, "exec:run", "server/web")
    assert [str(r) for r in allowed.matched] == ["ops: allow exec:* server/*"]
    assert allowed.explain() == "allowed by ops: allow exec:* server/*"

    denied = rbac.decide([allow, deny], "exec:run", "server/db")
    assert (denied.allowed, denied.action, denied.resource) == (False, "exec:run", "server/db")
    assert len(denied.matched) == 2
    assert denied.explain() == "denied by d: deny exec:* server/db"

    nothing = rbac.decide([deny], "logs:read", "server/db")
    assert (nothing.action, nothing.resource, nothing.matched) == ("logs:read", "server/db", ())
    assert nothing.explain() == "denied: no rule matches logs:read on server/db"
