"""A closed stdout ends labctl quietly, like coreutils: exit 141, nothing on stderr."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.procs import clean_env


# rich prints help and exits 1 on a broken pipe (quietly too); commands exit 141.
@pytest.mark.parametrize(
    ("args", "code"), [(["version"], 141), (["--help"], 1), (["exec", "--help"], 1)]
)
def test_closed_stdout_ends_labctl_without_a_word(args: list[str], code: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before labctl writes a byte
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == code
    assert err == b""
