"""A fault-suite site: labd and one lab-agent as real processes, real labctl processes.

The site is started synchronously (``start_site``) so one site can serve a whole test module
(pytest-trio fixtures are per test). Every line the daemons print goes to a log file; waits
on the daemons look at those files or at /proc with a deadline (no fixed sleeps).

Remote commands started by the suite carry ``LAB_FAULT=<tag>`` in their environment, so
"no process left on the agent" is checked by scanning /proc for that tag.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from lab.labd.config import LabdConfig
from tests.e2e.daemons import clean_env, labd_env, port_of
from tests.e2e.procs import free_port
from tests.hub.hubtools import enroll_state
from tests.labd.harness import Credentials, RunningLabd

AGENT = "f1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# One name per pytest-xdist worker, so a worker never counts the other's processes as its own.
TAG_VAR = "LAB_FAULT" + os.environ.get("PYTEST_XDIST_WORKER", "").upper().replace("GW", "_GW")
LABD_SESSION = re.compile(rf"agent server/{AGENT} connected \(session (\w+)")
AGENT_SESSION = re.compile(r"connected to labd \(session (\w+)\)")

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``check`` (cheap, local) until it returns something true; AssertionError after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


async def await_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """:func:`wait_for` for trio tests."""
    with trio.fail_after(timeout):
        while True:
            value = check()
            if value:
                return value
            await trio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover


@attrs.define
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        with _suppress_gone():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with _suppress_gone():
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill9()


class _suppress_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError)


def start_daemon(
    name: str, argv: list[str], env: dict[str, str], workdir: Path
) -> tuple[Daemon, str]:
    """Start ``argv`` in its own session and wait for its ``READY=1``; its ``STATUS=``."""
    sock_path = workdir / f"{name}.notify"
    sock_path.unlink(missing_ok=True)
    log = workdir / f"{name}.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(READY_TIMEOUT)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env={**env, "NOTIFY_SOCKET": str(sock_path)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        daemon = Daemon(name=name, proc=proc, log=log)
        try:
            while True:
                datagram = sock.recv(4096).decode()
                fields = dict(line.partition("=")[::2] for line in datagram.splitlines())
                if fields.get("READY") == "1":
                    return daemon, fields.get("STATUS", "")
        except BaseException:
            daemon.stop()
            raise


@attrs.define
class Site:
    tmp: Path
    port: int
    labd: Daemon
    agent: Daemon
    home: Path
    feed: Path
    admin: Credentials
    labd_settings: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "labd"

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            LABCTL_HOME=str(self.home),
            LABCTL_CONFIG=str(self.home / "config.yaml"),
            LABCTL_SERVER=self.url,
            **extra,
        )

    def running(self) -> RunningLabd:
        """An API handle (call inside trio: it holds a trio.Event)."""
        config = LabdConfig(host="127.0.0.1", port=self.port, data_dir=str(self.data_dir))
        return RunningLabd(config=config, host="127.0.0.1", port=self.port, shutdown=trio.Event())

    # --- the agent's session ---

    def labd_sessions(self) -> list[str]:
        return LABD_SESSION.findall(self.labd_logs())

    def labd_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("labd*.log")))

    def agent_sessions(self) -> list[str]:
        return AGENT_SESSION.findall(self.agent.text())

    def assert_quiet_logs(self) -> None:
        """labd logged no traceback and no unhandled error (client faults are INFO lines)."""
        text = self.labd_logs()
        for bad in ("Traceback", "unhandled error"):
            assert bad not in text, text[text.index(bad) - 500 :][:3000]

    def disconnects(self) -> int:
        """labd's INFO lines for exec/logs clients that went away."""
        return len(re.findall(r"(?:exec|logs): user/\S+ \(\S+\) disconnected", self.labd_logs()))

    def assert_one_session(self) -> None:
        """The agent connected once and never again: the same session id on both ends."""
        assert self.agent.proc.poll() is None, "lab-agent died"
        agent, labd = self.agent_sessions(), self.labd_sessions()
        assert len(agent) == 1 and agent == labd, f"agent sessions {agent}, labd saw {labd}"

    # --- processes ---

    def start_agent(self) -> Daemon:
        env = clean_env(
            LAB_AGENT_STATE_DIR=str(self.tmp / AGENT), LAB_AGENT_LOG_SOURCES=f"feed={self.feed}"
        )
        argv = [sys.executable, "-m", "lab.agent.main", "run"]
        self.agent, _ = start_daemon("agent", argv, env, self.tmp)
        return self.agent

    def start_labd(self, tag: str = "labd") -> Daemon:
        env = labd_env(self.data_dir, port=self.port, **self.labd_settings)
        argv = [sys.executable, "-m", "lab.labd.main"]
        self.labd, status = start_daemon(tag, argv, env, self.tmp)
        assert port_of(status) == self.port
        return self.labd

    def stop(self) -> None:
        for daemon in (self.agent, self.labd):
            daemon.stop()


def labctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "lab.cli.main", *args]


def start_site(tmp: Path, **labd_settings: str) -> Site:
    """labd, an enrolled lab-agent ``f1`` (a file log source ``feed``) and an admin labctl."""
    port = free_port()
    settings = {"LABD_AGENT_ADMIT_RATE": "0", **labd_settings}
    env = labd_env(tmp / "labd", port=port, **settings)
    labd, _ = start_daemon("labd", [sys.executable, "-m", "lab.labd.main"], env, tmp)
    feed = tmp / "feed.log"
    feed.write_text("")
    try:

        async def enroll() -> Credentials:
            config = LabdConfig(host="127.0.0.1", port=port, data_dir=str(tmp / "labd"))
            api = RunningLabd(config=config, host="127.0.0.1", port=port, shutdown=trio.Event())
            admin = await api.admin()
            await enroll_state(api, admin, AGENT, tmp / AGENT)
            return admin

        admin = trio.run(enroll)
        home = tmp / "home"
        ca_pem = (tmp / "labd" / "ca.pem").read_bytes()
        save_credentials(
            home, CliCredentials(ca_pem=ca_pem, cert_pem=admin.cert_pem, key_pem=admin.key_pem)
        )
        site = Site(
            tmp=tmp,
            port=port,
            labd=labd,
            agent=labd,  # replaced just below
            home=home,
            feed=feed,
            admin=admin,
            labd_settings=settings,
        )
        try:
            site.start_agent()
            wait_for("the agent's session", lambda: site.labd_sessions() and site.agent_sessions())
        except BaseException:
            site.stop()  # the agent runs in its own session: nothing else would end it
            raise
        return site
    except BaseException:
        labd.stop()
        raise


async def probe(site: Site) -> None:
    """A new exec starts and ends on the agent (its connection's reader is not stuck)."""
    from lab.client.wsclient import StreamSession, StreamState, connect
    from lab.proto import Channel

    async def ignore(_: StreamState, channel: Channel, data: bytes) -> None:
        pass

    context = site.running().ssl_context(site.admin, alpn=["http/1.1"])
    with trio.fail_after(15):
        async with connect(site.url, "/ws/exec", context) as ws:
            session = StreamSession(ws)
            start = {"argv": ["/bin/true"], "env": {TAG_VAR: "probe"}}
            (state,) = await session.open("exec", {"targets": [AGENT], "start": start})
            await session.run(ignore)
    assert state.exit is not None and state.exit.code == 0, state


# --- remote processes ---


def tagged_pids(tag: str) -> list[int]:
    """Processes on this box (the agent's) whose environment carries ``LAB_FAULT=tag``."""
    needle = f"{TAG_VAR}={tag}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ + b"\0" and _alive(entry):
            found.append(int(entry.name))
    return found


def _alive(entry: Path) -> bool:
    try:
        return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def assert_no_orphans(tag: str, timeout: float = 15.0) -> None:
    """Every remote process tagged ``tag`` is gone (killed with its stream) within ``timeout``."""
    await await_for(f"no process tagged {tag}", lambda: not tagged_pids(tag), timeout)


@attrs.define
class Output:
    """A child's stdout or stderr collected into a file."""

    path: Path

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def lines(self) -> list[str]:
        return self.text().splitlines()


def counter_script(stop: Path, period: float) -> str:
    """Print 1, 2, 3… every ``period`` s until ``stop`` exists, then ``end N``."""
    return (
        f'i=0; while [ ! -e "{stop}" ]; do i=$((i+1)); echo $i; sleep {period}; done; echo end $i'
    )


def iter_expected_counter(lines: list[str]) -> Iterator[str]:
    """What a finished counter must have printed, judged from its last line."""
    last = lines[-1] if lines else ""
    assert last.startswith("end "), f"the counter did not finish: {lines[-3:]}"
    count = int(last.split()[1])
    yield from (str(i) for i in range(1, count + 1))
    yield last
