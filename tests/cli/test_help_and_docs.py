"""Every labctl command has help text and an example, and is documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli.main import app
from lab.client.settings import CliSettings
from lab.runtime.config import field_names
from tests.cli.commands import command_paths

ROOT = Path(__file__).resolve().parents[2]
PATHS = sorted(command_paths(app))


def docs_text() -> str:
    parts = [(ROOT / "README.md").read_text()]
    parts += [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(parts)


def test_the_tree_is_not_empty() -> None:
    assert ("config", "set") in PATHS
    assert ("init", "labd", "standalone", "start") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_every_command_is_documented(path: tuple[str, ...]) -> None:
    assert "labctl " + " ".join(path) in docs_text(), (
        f"`labctl {' '.join(path)}` is not in the docs"
    )


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        app([*path, "--help"], exit_on_error=False)
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Usage:" in out
    leaf = app
    for name in path:
        leaf = leaf[name]
    if not leaf.resolved_commands() or leaf.default_command is not None:
        # A runnable command must show an example in its help.
        assert "Example" in out or "example" in out, (
            f"labctl {' '.join(path)} --help has no example"
        )


def test_help_and_version_do_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from lab.cli.main import app\n"
        "for argv in (['--help'], ['version']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('trio', 'httpx', 'cryptography', 'hypercorn') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout


def _daemon_paths() -> list[tuple[str, tuple[str, ...]]]:
    from lab.agent.main import app as agent_app
    from lab.bastion.main import app as bastion_app

    return [
        (program, path)
        for program, daemon_app in (("lab-agent", agent_app), ("lab-bastion", bastion_app))
        for path in command_paths(daemon_app)
    ]


@pytest.mark.parametrize(
    ("program", "path"), _daemon_paths(), ids=lambda v: v if isinstance(v, str) else " ".join(v)
)
def test_every_daemon_command_is_documented(program: str, path: tuple[str, ...]) -> None:
    line = f"{program} {' '.join(path)}"
    assert line in docs_text(), f"`{line}` is not in the docs"


@pytest.mark.parametrize("command", ["get", "set"])
def test_config_get_and_set_name_every_setting(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        app(["config", command, "--help"], exit_on_error=False)
    out = capsys.readouterr().out
    missing = [key for key in field_names(CliSettings) if key not in out]
    assert missing == [], f"labctl config {command} --help does not name {missing}"
