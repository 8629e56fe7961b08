"""The daemons' command lines and start-up failures, as systemd users expect them.

--help and --version answer without touching a file; an unknown argument is one error line and
exit 2; a port in use, an unusable data dir, an unreachable database and a missing psycopg
are each one ``error:`` line (with a hint) and their documented exit code.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from lab import __version__
from tests.e2e.procs import clean_env, free_port, run

DAEMONS = {
    "labd": ("lab.labd.main", "LABD_DATA_DIR"),
    "lab-agent": ("lab.agent.main", "LAB_AGENT_STATE_DIR"),
    "lab-bastion": ("lab.bastion.main", "LAB_BASTION_DATA_DIR"),
}


def daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    data = str(tmp_path / "data")
    env = clean_env(
        HOME=str(tmp_path / "home"),
        LABD_DATA_DIR=data,
        LAB_AGENT_STATE_DIR=data,
        LAB_BASTION_DATA_DIR=data,
        LABD_HOST="127.0.0.1",
    )
    return {**env, **extra}


def error_lines(stderr: str, program: str) -> tuple[str, list[str]]:
    """The error line and the hint; asserts there is no traceback and nothing else of ours.

    Log records (the CA created on the way, psycopg's retries) may precede them.
    """
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith(f"{program}:")]
    assert 1 <= len(lines) <= 2, stderr
    assert lines[0].startswith(f"{program}: error: "), stderr
    assert all(line.startswith(f"{program}: hint: ") for line in lines[1:]), stderr
    return lines[0].removeprefix(f"{program}: error: "), lines[1:]


@pytest.mark.parametrize("program", sorted(DAEMONS))
def test_help_version_and_bad_arguments_touch_no_file(program: str, tmp_path: Path) -> None:
    module, _ = DAEMONS[program]
    env = daemon_env(tmp_path)
    argv = [sys.executable, "-m", module]
    for flag in ("--help", "-h"):
        res = run([*argv, flag], env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"Usage: {program}"), res.stdout
    for flag in ("--version", "-V"):
        res = run([*argv, flag], env)
        assert (res.returncode, res.stdout) == (0, f"{program} {__version__}\n"), res.stderr
    res = run([*argv, "--bogus-flag"], env)
    assert res.returncode == 2
    message, hint = error_lines(res.stderr, program)
    assert "--bogus-flag" in message
    assert hint == [f"{program}: hint: see {program} --help"]
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "home").exists()


# What labd --help and --version must not import: the server stack costs most of a second.
SERVER_STACK = ("quart", "quart_trio", "hypercorn", "lab.labd.server", "lab.labd.app")
_MODULES_AFTER = """
import runpy, sys
sys.argv = ["labd", sys.argv[1]]
try:
    runpy.run_module("lab.labd.main", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_labd_help_and_version_load_no_server_stack(flag: str, tmp_path: Path) -> None:
    res = run([sys.executable, "-c", _MODULES_AFTER, flag], daemon_env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: labd" if flag == "--help" else "labd "), res.stdout
    loaded = res.stderr.split()
    assert "lab.labd" in loaded and "cyclopts" in loaded
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in SERVER_STACK)]
    assert heavy == []


@pytest.mark.parametrize("program", ["labd", "lab-bastion"])
def test_port_in_use_is_one_line_naming_port_and_holder(program: str, tmp_path: Path) -> None:
    module, _ = DAEMONS[program]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = daemon_env(
            tmp_path, LABD_PORT=str(port), LAB_BASTION_PORT=str(port), LAB_BASTION_HOST="127.0.0.1"
        )
        extra = ["--no-dhcp"] if program == "lab-bastion" else []
        res = run([sys.executable, "-m", module, *extra], env, timeout=90)
    assert res.returncode == 3, res.stderr
    message, hint = error_lines(res.stderr, program)
    assert message.startswith(f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()} ")
    assert hint == [f"{program}: hint: stop the other process or choose another port"]


def test_unwritable_data_dir_is_exit_4(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    env = daemon_env(tmp_path, LABD_DATA_DIR=str(blocker / "data"), LABD_PORT="0")
    res = run([sys.executable, "-m", "lab.labd.main"], env)
    assert res.returncode == 4, res.stderr
    message, hint = error_lines(res.stderr, "labd")
    assert message.startswith(f"cannot create data dir {blocker / 'data'}")
    assert hint and "LABD_DATA_DIR" in hint[0]


def test_unreachable_database_is_exit_5(tmp_path: Path) -> None:
    # Nothing listens on this port: the connection is refused at once.
    url = f"postgresql://lab@127.0.0.1:{free_port()}/lab?connect_timeout=5"
    env = daemon_env(tmp_path, LABD_DATABASE_URL=url, LABD_PORT="0", LABD_DATABASE_TIMEOUT="10")
    res = run([sys.executable, "-m", "lab.labd.main"], env, timeout=120)
    assert res.returncode == 5, res.stderr
    message, hint = error_lines(res.stderr, "labd")
    assert "127.0.0.1" in message
    assert hint and "LABD_DATABASE_URL" in hint[0]


def test_postgres_url_without_psycopg_names_the_extra(tmp_path: Path) -> None:
    # A Python where psycopg cannot be imported, as after `pip install labctl` alone.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.modules['psycopg'] = None\nsys.modules['psycopg_pool'] = None\n"
    )
    env = daemon_env(
        tmp_path,
        LABD_DATABASE_URL="postgresql://lab@127.0.0.1:5432/lab",
        LABD_PORT="0",
        PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    )
    res = run([sys.executable, "-m", "lab.labd.main"], env)
    assert res.returncode == 6, res.stderr
    message, hint = error_lines(res.stderr, "labd")
    assert message == "postgresql:// databases need psycopg, which is not installed"
    assert hint == ["labd: hint: pip install 'labctl[postgres]'"]


def test_bastion_and_agent_with_an_unusable_data_dir_say_so_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    env = daemon_env(
        tmp_path,
        LAB_BASTION_DATA_DIR=str(blocker / "data"),
        LAB_BASTION_PORT="0",
        LAB_BASTION_HOST="127.0.0.1",
        LAB_AGENT_STATE_DIR=str(blocker / "state"),
    )
    res = run([sys.executable, "-m", "lab.bastion.main", "--no-dhcp"], env)
    assert res.returncode == 4, res.stderr
    message, hint = error_lines(res.stderr, "lab-bastion")
    assert message == f"cannot create data dir {blocker / 'data'}: Not a directory"
    assert hint and "LAB_BASTION_DATA_DIR" in hint[0]
    res = run([sys.executable, "-m", "lab.agent.main", "run"], env)
    assert res.returncode == 4, res.stderr
    message, hint = error_lines(res.stderr, "lab-agent")
    assert str(blocker / "state") in message
