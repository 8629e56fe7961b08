"""The plain `labctl exec server/NAME -- CMD` runs on blocking stdlib sockets (lab.cli.exec_fast):
it imports none of the trio stack, and it answers exactly as the full CLI (cyclopts, then the
trio client) does: exit code, stdout and stderr byte for byte, for commands that succeed and for
every error on the way (no identity, a bad URL, labd down, denied, unknown, offline)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from lab.labd.relay import relay as streams
from tests.exec.conftest import ONLINE, Lab, pid_alive
from tests.exec.fakehub import FakeHub
from tests.labd.harness import running_labd

# What the fast path must never import: each costs more than the whole exec round trip.
HEAVY = (
    b"trio",
    b"trio_websocket",
    b"wsproto",
    b"h11",
    b"attr",
    b"attrs",
    b"cattrs",
    b"cyclopts",
    b"httpx",
    b"yaml",
    b"cryptography",
    b"lab.proto",
    b"lab.model",
)
# The full CLI with no fast path: cyclopts' `exec` command, then lab.cli.exec_run on trio.
FULL_CLI = (
    "import sys; from lab.cli.commands import app; from lab.runtime.commandline import run_app;"
    " from lab.runtime.exits import handle\n"
    "run_app(app, sys.argv[1:])"
)


async def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            argv, env=env, capture_stdout=True, capture_stderr=True, check=False
        )


async def test_a_plain_exec_imports_none_of_the_trio_stack(lab: Lab) -> None:
    argv = lab.labctl("exec", "server/alpha", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    result = await run([argv[0], "-X", "importtime", *argv[1:]], lab.env())
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stdout == b"out\n"
    lines = result.stderr.splitlines()
    assert b"err" in lines
    imported = {line.rsplit(b"|", 1)[-1].strip() for line in lines if b"import time:" in line}
    assert b"lab.cli.exec_fast" in imported
    heavy = sorted(m for m in imported if m.split(b".")[0] in HEAVY or m.startswith(HEAVY[-2:]))
    assert not heavy


def full(lab: Lab, *args: str) -> list[str]:
    return [sys.executable, "-c", FULL_CLI, *args]


async def both(lab: Lab, env: dict[str, str], *args: str) -> None:
    """The fast path and the full CLI answer ``labctl ARGS`` the same way."""
    fast = await run(lab.labctl(*args), env)
    slow = await run(full(lab, *args), env)
    assert (fast.returncode, fast.stdout, fast.stderr.decode()) == (
        slow.returncode,
        slow.stdout,
        slow.stderr.decode(),
    ), f"fast: {fast.stderr.decode()}\nfull: {slow.stderr.decode()}"


@pytest.mark.parametrize(
    "command",
    [
        ["sh", "-c", "printf 'a\\0b'; printf 'to err' >&2; exit 3"],
        ["sh", "-c", "kill -TERM $$"],
        ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"],  # past a credit grant
        ["no-such-program"],
        ["true"],
        ["-i", "server/alpha", "--", "sh", "-c", "cat; echo stdin closed"],
    ],
)
async def test_commands_end_as_with_the_full_cli(lab: Lab, command: list[str]) -> None:
    if "--" not in command:
        command = ["server/alpha", "--", *command]
    await both(lab, lab.env(), "exec", *command)


@pytest.mark.parametrize(
    "options",
    [
        ["--timeout", "1s", "-e", "A=one two", "--env=B=2", "--cwd=/tmp"],
        ["--timeout=1s"],
        ["-e", "NOEQUALS"],  # not K=V
        ["--timeout", "5x"],  # not a duration
        ["--cwd", "/no/such/dir"],
        ["-e", "NOEQUALS", "--timeout", "5x"],  # two errors: the same one is said
    ],
)
async def test_options_as_with_the_full_cli(lab: Lab, options: list[str]) -> None:
    script = 'echo "$A|$B|$(pwd)"; sleep 5'
    await both(lab, lab.env(), "exec", *options, "server/alpha", "--", "sh", "-c", script)


@pytest.mark.parametrize(
    "flags",
    [
        ["-t"],  # a pseudo-terminal of 24x80 (labctl's stdout is not a terminal)
        ["--tty"],
        ["-i", "-t"],  # stdin at its end at once
    ],
)
async def test_a_tty_as_with_the_full_cli(lab: Lab, flags: list[str]) -> None:
    script = "tty >/dev/null && echo on a tty; stty size; echo err >&2; exit 3"
    await both(lab, lab.env(), "exec", *flags, "server/alpha", "--", "sh", "-c", script)


@pytest.mark.parametrize("server", ["nosuch", "offline"])
async def test_unknown_and_offline_servers_as_with_the_full_cli(lab: Lab, server: str) -> None:
    await both(lab, lab.env(), "exec", f"server/{server}", "--", "true")


async def test_denied_as_with_the_full_cli(lab: Lab) -> None:
    home, _ = await lab.user_home("vera", ["viewer"])
    await both(lab, lab.env(home), "exec", "server/alpha", "--", "true")


async def test_connection_failures_as_with_the_full_cli(lab: Lab, tmp_path: Path) -> None:
    exec_true = ("exec", "server/alpha", "--", "true")
    # No identity at all.
    await both(lab, lab.env(tmp_path / "empty"), *exec_true)
    # A server URL that is not https.
    await both(lab, {**lab.env(), "LABCTL_SERVER": "http://127.0.0.1:1"}, *exec_true)
    # Nothing listening.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    await both(lab, {**lab.env(), "LABCTL_SERVER": f"https://127.0.0.1:{closed}"}, *exec_true)
    # A key others may read.
    loose = tmp_path / "loose"
    shutil.copytree(lab.home, loose)
    (loose / "key.pem").chmod(0o644)
    await both(lab, lab.env(loose), *exec_true)


async def test_an_untrusted_labd_is_said_at_once(lab: Lab, tmp_path: Path) -> None:
    """A CA bundle that does not sign labd's certificate: the TLS error, exit 3, at once, by
    both clients (trio-websocket used to lose the handshake's error in its reader task, and
    the trio client waited out its 10 s connect timeout)."""
    stranger = tmp_path / "stranger"
    shutil.copytree(lab.home, stranger)
    (stranger / "ca.pem").write_bytes((stranger / "cert.pem").read_bytes())
    with trio.fail_after(8):
        result = await run(lab.labctl("exec", "server/alpha", "--", "true"), lab.env(stranger))
    assert result.returncode == 3
    assert result.stderr.decode().startswith(
        f"error: labd at {lab.labd.url} presented a certificate our CA bundle does not trust ("
    )
    assert result.stderr.decode().endswith(
        "hint: check the server URL, or log in again to refresh ca.pem\n"
    )
    with trio.fail_after(16):
        await both(lab, lab.env(stranger), "exec", "server/alpha", "--", "true")


async def test_settings_the_quick_reader_declines_still_work(lab: Lab) -> None:
    """A config file only YAML reads (quoted, commented) goes through the full loader."""
    (lab.home / "config.yaml").write_text(f"server: '{lab.labd.url}'  # quoted\n")
    env = lab.env()
    del env["LABCTL_SERVER"]
    result = await run(lab.labctl("exec", "server/alpha", "--", "echo", "ok"), env)
    assert (result.returncode, result.stdout) == (0, b"ok\n"), result.stderr
    (lab.home / "config.yaml").write_text("server: [not, a, url]\n")
    await both(lab, env, "exec", "server/alpha", "--", "true")


async def test_sigterm_and_sighup_reach_the_remote_command(lab: Lab) -> None:
    for signum, name in ((signal.SIGTERM, "TERM"), (signal.SIGHUP, "HUP")):
        script = f'trap "echo got {name}; exit 9" {name}; echo ready; while :; do sleep 1; done'
        with trio.fail_after(30):
            proc = await trio.lowlevel.open_process(
                lab.labctl("exec", "server/alpha", "--", "sh", "-c", script),
                env=lab.env(),
                stdout=subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None
                out = b""
                while b"ready\n" not in out:
                    out += await proc.stdout.receive_some(64)
                proc.send_signal(signum)
                while chunk := await proc.stdout.receive_some(64):
                    out += chunk
                code = await proc.wait()
            finally:
                proc.kill()
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()
        assert (out, code) == (f"ready\ngot {name}\n".encode(), 9)


async def test_a_second_ctrl_c_kills(lab: Lab) -> None:
    script = 'trap "echo once" INT; echo ready; while :; do sleep 1; done'
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            lab.labctl("exec", "server/alpha", "--", "sh", "-c", script),
            env=lab.env(),
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            out = b""
            while b"ready\n" not in out:
                out += await proc.stdout.receive_some(64)
            proc.send_signal(signal.SIGINT)
            while b"once\n" not in out:
                out += await proc.stdout.receive_some(64)
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
        finally:
            proc.kill()
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()
    assert code == 128 + signal.SIGKILL


async def test_stdin_larger_than_the_first_credit(lab: Lab) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: several stdin credits from labd
    with trio.fail_after(60):
        result = await trio.run_process(
            lab.labctl("exec", "-i", "server/alpha", "--", "sha256sum"),
            env=lab.env(),
            stdin=data,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    import hashlib

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


@pytest.fixture
async def pinging_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Lab]:
    """The ``lab`` of conftest with labd pinging its clients every 0.2 s and ending a client's
    streams after 1 s without an answer."""
    hub = FakeHub(online=ONLINE, sources={})
    monkeypatch.setattr(streams, "current_hub", lambda context: hub)
    async with running_labd(tmp_path, client_ping_interval=0.2, client_ping_timeout=1.0) as labd:
        admin = await labd.admin()
        home = tmp_path / "home"
        save_credentials(
            home,
            CliCredentials(ca_pem=labd.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem),
        )
        yield Lab(labd=labd, hub=hub, admin=admin, home=home, tmp=tmp_path)


async def test_a_stdout_nobody_reads_keeps_the_stream(pinging_lab: Lab) -> None:
    """More output than labd's window while nobody reads labctl's stdout for three ping
    timeouts: it waits in labctl's writer thread, labd's pings are answered meanwhile, and
    everything arrives once the reader reads."""
    lab = pinging_lab
    size = 10_000_000
    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(
            lab.labctl("exec", "server/alpha", "--", "head", "-c", str(size), "/dev/zero"),
            env=lab.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            got = await proc.stdout.receive_some(1)
            await trio.sleep(3.0)  # the condition under test: nothing read for 3 s
            while chunk := await proc.stdout.receive_some(1 << 20):
                got += chunk
            err = await proc.stderr.receive_some(4096)
            code = await proc.wait()
        finally:
            proc.kill()
            await proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    await pipe.aclose()
    assert (code, err) == (0, b"")
    assert len(got) == size and got == b"\0" * size


async def test_a_closed_stdout_cancels_the_remote_command(lab: Lab) -> None:
    """`labctl exec server/x -- sh -c 'echo $$; exec yes' | head -1`: labctl exits 141 without
    a word, and labd cancels the command (its process is gone)."""
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            lab.labctl("exec", "server/alpha", "--", "sh", "-c", "echo $$; exec yes"),
            env=lab.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = b""
            while b"\n" not in line:
                line += await proc.stdout.receive_some(64)
            pid = int(line.split(b"\n")[0])
            closed = lab.hub.closed
            await proc.stdout.aclose()  # the reader is gone
            err = b""
            while chunk := await proc.stderr.receive_some(4096):
                err += chunk
            code = await proc.wait()
            await closed.wait()
        finally:
            proc.kill()
            await proc.wait()
            if proc.stderr is not None:
                await proc.stderr.aclose()
    assert (code, err) == (141, b"")
    assert not pid_alive(pid)
