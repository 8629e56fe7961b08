"""The plain form of labctl exec is recognised exactly; anything else is cyclopts'."""

from __future__ import annotations

import pytest

from lab.cli.fastpath import plain_exec


def test_the_plain_form_is_taken() -> None:
    plain = plain_exec(["exec", "server/web1", "--", "uname", "-a"])
    assert plain is not None
    assert (plain.words, plain.stdin, plain.tty) == (["server/web1", "uname", "-a"], False, False)
    both = plain_exec(["exec", "-i", "--tty", "server/a", "server/b", "--", "sh", "--", "-x"])
    assert both is not None
    assert (both.words, both.stdin, both.tty) == (
        ["server/a", "server/b", "sh", "--", "-x"],
        True,
        True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["get", "servers"],
        ["exec", "server/a", "true"],  # no --: cyclopts splits the words
        ["exec", "--help"],
        ["exec", "server/a", "--help", "--", "true"],
        ["exec", "--", "true"],
        ["exec", "server/a", "--"],
        ["exec", "server/", "--", "true"],
        ["exec", "web1", "--", "true"],
        ["exec", "server/a", "-i", "--", "cat"],  # a flag after a target
        ["exec", "-it", "server/a", "--", "sh"],
        ["exec", "--timeout", "5s", "server/a", "--", "true"],
        ["exec", "-l", "role=db", "--", "true"],
        ["exec", "--cwd", "/tmp", "server/a", "--", "pwd"],
        ["exec", "-e", "A=1", "server/a", "--", "env"],
        ["exec", "--parallel", "2", "server/a", "--", "true"],
    ],
)
def test_anything_else_is_left_to_cyclopts(argv: list[str]) -> None:
    assert plain_exec(argv) is None
