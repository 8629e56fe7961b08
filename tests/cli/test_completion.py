"""labctl completion bash|zsh|fish: scripts the shells accept, completing labctl's commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def script(shell: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli.main", "completion", shell],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def complete_in_bash(path: Path, *words: str) -> list[str]:
    """What bash's completion function offers for ``words`` (the last one being typed)."""
    words_text = " ".join(f"'{w}'" for w in words)
    code = (
        f"source {path}\n"
        f"COMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}\n"
        'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}\n'
        "$(complete -p labctl | sed -E 's/.*-F ([^ ]+) .*/\\1/')\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_accepts_the_script_and_completes_commands(tmp_path: Path) -> None:
    path = tmp_path / "labctl.bash"
    path.write_text(script("bash"))
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert complete_in_bash(path, "labctl", "ge") == ["get"]
    assert set(complete_in_bash(path, "labctl", "get", "se")) == {"servers", "server"}
    assert "use-context" in complete_in_bash(path, "labctl", "config", "u")
    assert "--selector" in complete_in_bash(path, "labctl", "get", "servers", "--se")


@pytest.mark.parametrize(("shell", "first"), [("zsh", "#compdef labctl"), ("fish", "")])
def test_zsh_and_fish_scripts(shell: str, first: str, tmp_path: Path) -> None:
    text = script(shell)
    assert "get" in text and "use-context" in text
    if first:
        assert text.startswith(first)
    if shutil.which(shell):
        path = tmp_path / f"labctl.{shell}"
        path.write_text(text)
        subprocess.run([shell, "-n", str(path)], check=True)


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli.main", "completion", "tcsh"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith('error: invalid value "tcsh" for SHELL')
