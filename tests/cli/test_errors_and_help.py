"""Every labctl error is one ``error:`` line (plus a ``hint:`` line), parse errors included, and
every command's --help has its description, help for each option and an example."""

from __future__ import annotations

import pytest
from cyclopts import App

from lab.cli.main import app
from tests.cli.commands import command_paths
from tests.cli.test_config_cmd import labctl


def _leaf(path: tuple[str, ...]) -> App:
    leaf = app
    for name in path:
        leaf = leaf[name]
    return leaf


RUNNABLE = [p for p in sorted(command_paths(app)) if _leaf(p).default_command is not None]


@pytest.mark.parametrize("path", RUNNABLE, ids=" ".join)
def test_every_option_and_argument_has_help(path: tuple[str, ...]) -> None:
    leaf = _leaf(path)
    assert (leaf.help or "").strip(), f"labctl {' '.join(path)} has no description"
    arguments = leaf.assemble_argument_collection(parse_docstring=True)
    bare = [a.names[0] for a in arguments if a.show and not (a.parameter.help or "").strip()]
    assert bare == [], f"labctl {' '.join(path)}: no help for {bare}"


@pytest.mark.parametrize(
    ("argv", "error", "hint"),
    [
        (
            ["get", "servers", "--colour"],
            "unknown option: --colour",
            "see labctl get servers --help",
        ),
        (["gett"], 'unknown command "gett". Did you mean "get"?', "see labctl --help"),
        (["config", "set"], "missing argument KEY", "see labctl config set --help"),
        (["tokens", "create"], "missing option --kind", "see labctl tokens create --help"),
        (["config", "get", "server", "extra"], "unexpected argument: extra", None),
        (["get", "servers", "--status"], None, "see labctl get servers --help"),
    ],
)
def test_parse_errors_are_one_line_and_a_hint(
    tmp_path: object, argv: list[str], error: str | None, hint: str | None
) -> None:
    from pathlib import Path

    res = labctl(Path(str(tmp_path)), *argv)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), res.stderr
    assert "╭" not in res.stderr and "Traceback" not in res.stderr
    if error is not None:
        assert lines[0] == f"error: {error}"
    if hint is not None:
        assert lines[1] == f"hint: {hint}"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (("exec",), ["never joined into a shell string", "Send labctl's stdin", "server/NAME"]),
        (("logs",), ["--source", "Keep printing new lines", "Lines are printed as they arrive"]),
        (("login",), ["--ca-fingerprint", "Example:"]),
    ],
)
def test_long_descriptions_reach_help(
    path: tuple[str, ...], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        app([*path, "--help"], exit_on_error=False)
    out = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in out, f"labctl {' '.join(path)} --help lacks {word!r}"
