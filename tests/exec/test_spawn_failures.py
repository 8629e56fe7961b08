"""labctl exec when the remote command cannot start: exit 127 (not found), 126 (not
executable) and a plain "no such directory" for --cwd, as sh and ssh report them."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.exec.test_real_hub import Fleet, labctl
from tests.exec.test_real_hub import fleet as fleet


async def test_missing_program_is_127(fleet: Fleet) -> None:
    with trio.fail_after(60):
        done = await labctl(fleet, "exec", "server/n1", "--", "/nonexistent/prog", "-x")
    assert done.returncode == 127, done.stderr
    assert done.stderr.decode().splitlines() == ["error: command not found: /nonexistent/prog"]


async def test_program_without_execute_permission_is_126(fleet: Fleet, tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    with trio.fail_after(60):
        done = await labctl(fleet, "exec", "server/n1", "--", str(script))
    assert done.returncode == 126, done.stderr
    (line,) = done.stderr.decode().splitlines()
    assert line == f"error: cannot execute {script}: Permission denied"


async def test_missing_working_directory_says_so(fleet: Fleet) -> None:
    with trio.fail_after(60):
        done = await labctl(fleet, "exec", "server/n1", "--cwd", "/nonexistent", "--", "pwd")
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode().splitlines() == ["error: no such directory: /nonexistent"]
    # Existing directory, existing program: runs there.
    with trio.fail_after(60):
        done = await labctl(fleet, "exec", "server/n1", "--cwd", "/tmp", "--", "pwd")
    assert (done.returncode, done.stdout) == (0, b"/tmp\n"), done.stderr
