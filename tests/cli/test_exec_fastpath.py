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
        ["exec", "-l", "role=db", "--", "true"],
        ["exec", "--parallel", "2", "server/a", "--", "true"],
        ["exec", "--timeout", "--", "true"],  # no value
        ["exec", "server/a", "--timeout", "5s", "--", "true"],  # an option after a target
        ["exec", "--timeout", "5s", "--timeout", "6s", "server/a", "--", "true"],  # twice
        ["exec", "--cwd", "", "server/a", "--", "pwd"],  # an empty value
        ["exec", "--cwd", "-i", "server/a", "--", "pwd"],  # a value like an option
        ["exec", "-e=A=1", "server/a", "--", "env"],  # = after a short name
        ["exec", "--timeout", "5s", "--", "true"],  # no target
    ],
)
def test_anything_else_is_left_to_cyclopts(argv: list[str]) -> None:
    assert plain_exec(argv) is None


def test_options_before_the_targets_are_taken() -> None:
    argv = [
        "exec",
        "--timeout",
        "5s",
        "-e",
        "A=1",
        "--env=B=2=3",
        "--cwd=/srv",
        "-i",
        "server/a",
        "--",
        "env",
    ]
    plain = plain_exec(argv)
    assert plain is not None
    assert (plain.timeout, plain.env, plain.cwd, plain.stdin) == (
        "5s",
        ["A=1", "B=2=3"],
        "/srv",
        True,
    )
    assert (plain.words, plain.command) == (["server/a", "env"], ["env"])
