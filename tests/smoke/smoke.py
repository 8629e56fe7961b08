"""The one-command proof that a fresh install works (``nox -s smoke``).

Also ``python tests/smoke/smoke.py [--keep]``.

Starts labd, the bastion (HTTP only, no DHCP) and two agents as real processes on loopback, in
a temporary directory with its own LABCTL_HOME, and walks the story an operator follows, with
the real ``labctl``, ``lab-agent`` and ``lab-bastion`` commands. It prints one line per step
with its time and stops at the first broken step (exit status 1, with the tail of every
daemon's log). Every process it started is stopped at the end, whatever happened.

Importable: :func:`run_smoke` runs the same walk in a given directory (tests/e2e/test_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx

PY = sys.executable
LABCTL = [PY, "-m", "lab.cli.main"]
LAB_AGENT = [PY, "-m", "lab.agent.main"]
LAB_BASTION = [PY, "-m", "lab.bastion.main"]
LABD = [PY, "-m", "lab.labd.main"]

# Bounds, not expectations: each is far above what a step takes here.
READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0
ONLINE_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

DISCOVERED_MAC = "52:54:00:5a:00:01"
INSTALLED_NAME = "smoke-node"
LOG_LINE = "smoke: the agent's log source works"


class SmokeFailed(Exception):
    """A step of the walk broke; the message says which and why."""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any labctl setting that could leak in, plus ``extra``."""
    prefixes = ("LABD_", "LABCTL_", "LAB_", "NOTIFY_", "WATCHDOG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


class Daemons:
    """The processes of one walk: started with a notify socket, all stopped on close."""

    def __init__(self, workdir: Path, sockets: Path) -> None:
        self.workdir = workdir
        self.sockets = sockets
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> str:
        """Start ``name`` and wait for its systemd ``READY=1``; return its ``STATUS=`` text.

        Every daemon of labctl speaks the notify protocol, so readiness is an event here,
        not a guess: READY comes once the listener is bound (labd, lab-bastion) or the identity
        is loaded (lab-agent). The receive wakes up every half second only to notice a daemon
        that died before saying READY.
        """
        path = self.sockets / f"{name}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        with sock, log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                env={**env, "NOTIFY_SOCKET": str(path)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
            self.procs[name] = proc
            deadline = time.monotonic() + READY_TIMEOUT
            sock.settimeout(0.5)
            while time.monotonic() < deadline:
                try:
                    datagram = sock.recv(4096).decode()
                except TimeoutError:
                    if proc.poll() is not None:
                        raise SmokeFailed(
                            f"{name} exited with {proc.returncode} before READY"
                        ) from None
                    continue
                fields = dict(line.partition("=")[::2] for line in datagram.splitlines())
                if fields.get("READY") == "1":
                    return fields.get("STATUS", "")
        raise SmokeFailed(f"{name} did not report READY within {READY_TIMEOUT:g} s")

    def stop_all(self) -> None:
        """SIGTERM every process (its own session: children too), SIGKILL what remains."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  {name} ignored SIGTERM for {STOP_TIMEOUT:g} s: killing it")
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name} ({path})")
            out.extend(text)
        return "\n".join(out)


def port_of(status: str) -> int:
    """The port at the end of a READY status: ``listening on 127.0.0.1:PORT``."""
    return int(status.rstrip("/").rsplit(":", 1)[1])


class Walk:
    """The story, one method per step; each raises SmokeFailed on a broken expectation."""

    def __init__(self, workdir: Path, daemons: Daemons) -> None:
        self.dir = workdir
        self.daemons = daemons
        self.admin_env = clean_env(LABCTL_HOME=str(workdir / "home-admin"))
        self.viewer_env = clean_env(LABCTL_HOME=str(workdir / "home-viewer"))
        self.labd_data = workdir / "labd"
        self.bastion_data = workdir / "bastion"
        self.url = ""
        self.fingerprint = ""
        self.bastion_url = ""
        self.operator_url = ""
        self.agent_tokens: list[str] = []
        self.enroll_config = workdir / "enroll.yaml"

    # --- helpers ---

    def run(
        self, argv: list[str], env: Mapping[str, str], *, expect: int | None = 0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, env=dict(env), capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        if expect is not None and done.returncode != expect:
            shown = " ".join(a for a in argv if a not in (PY, "-m"))
            raise SmokeFailed(
                f"`{shown}` exited {done.returncode}, expected {expect}:\n"
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done

    def labctl(self, *args: str, env: Mapping[str, str] | None = None, expect: int = 0) -> str:
        return self.run([*LABCTL, *args], env or self.admin_env, expect=expect).stdout

    def labctl_json(self, *args: str) -> Any:
        return json.loads(self.labctl(*args, "-o", "json"))

    def agent_env(self, name: str) -> dict[str, str]:
        return clean_env(
            LAB_AGENT_STATE_DIR=str(self.dir / f"agent-{name}"),
            LAB_AGENT_LOG_SOURCES=f"app={self.dir / f'app-{name}.log'}",
        )

    # --- steps ---

    def start_labd(self) -> str:
        env = clean_env(
            LABD_CONFIG=str(self.dir / "absent.yaml"),
            LABD_DATA_DIR=str(self.labd_data),
            LABD_HOST="127.0.0.1",
            LABD_PORT="0",
        )
        status = self.daemons.start("labd", LABD, env)
        self.url = f"https://127.0.0.1:{port_of(status)}"
        from lab import pki

        self.fingerprint = pki.load_ca_bundle((self.labd_data / "ca.pem").read_bytes())[
            0
        ].fingerprint()
        return self.url

    def bootstrap_login(self) -> str:
        token = (self.labd_data / "bootstrap-token").read_text().strip()
        self.labctl(
            "login", "--server", self.url, "--token", token,
            "--ca-fingerprint", self.fingerprint, "--username", "admin",
        )  # fmt: skip
        who = self.labctl_json("whoami")
        if "admin" not in who.get("roles", []):
            raise SmokeFailed(f"bootstrap login gave roles {who.get('roles')}, not admin")
        return f"user/{who['name']}"

    def create_agent_tokens(self) -> str:
        for _ in range(2):
            made = self.labctl_json("tokens", "create", "--kind", "agent", "--ttl", "10m")
            self.agent_tokens.append(made["token"])
        return f"{len(self.agent_tokens)} one-time tokens"

    def agents_enroll_and_run(self) -> str:
        for name, token in zip(("a", "b"), self.agent_tokens, strict=True):
            env = self.agent_env(name)
            (self.dir / f"app-{name}.log").write_text(f"{LOG_LINE} on {name}\n")
            self.run(
                [*LAB_AGENT, "enroll", "--server", self.url, "--token", token,
                 "--hostname", name, "--ca-fingerprint", self.fingerprint],
                env,
            )  # fmt: skip
            self.daemons.start(f"agent-{name}", [*LAB_AGENT, "run"], env)
        return "server/a, server/b"

    def both_online(self) -> str:
        # An agent's connection to labd is only visible through labd's answer, so this polls
        # `labctl get servers` (the command under test) until both are online or time runs out.
        deadline = time.monotonic() + ONLINE_TIMEOUT
        while True:
            items = self.labctl_json("get", "servers")
            online = sorted(s["name"] for s in items if s["status"] == "online")
            if {"a", "b"} <= set(online):
                return ", ".join(online) + " online"
            if time.monotonic() > deadline:
                raise SmokeFailed(f"after {ONLINE_TIMEOUT:g} s only {online} are online")
            time.sleep(0.2)

    def exec_exit_code(self) -> str:
        done = self.run([*LABCTL, "exec", "server/a", "--", "sh", "-c", "exit 3"],
                        self.admin_env, expect=3)  # fmt: skip
        hello = self.labctl("exec", "server/b", "--", "echo", "hello from b")
        if "hello from b" not in hello:
            raise SmokeFailed(f"exec on server/b printed {hello!r}")
        return f"exit {done.returncode} passed through"

    def logs(self) -> str:
        out = self.labctl("logs", "server/a", "--source", "app", "-n", "5")
        if f"{LOG_LINE} on a" not in out:
            raise SmokeFailed(f"labctl logs server/a printed {out!r}")
        return "file source read"

    def viewer_denied(self) -> str:
        made = self.labctl_json("users", "create", "viewer1", "--role", "viewer")
        self.labctl(
            "login", "--server", self.url, "--token", made["token"], "--username", "viewer1",
            "--ca-fingerprint", self.fingerprint, env=self.viewer_env,
        )  # fmt: skip
        done = self.run([*LABCTL, "exec", "server/a", "--", "true"], self.viewer_env, expect=3)
        if "servers:exec" not in done.stderr and "may not" not in done.stderr:
            raise SmokeFailed(f"viewer's exec refused without saying why: {done.stderr!r}")
        return done.stderr.strip().splitlines()[0][:90]

    def audit_verify(self) -> str:
        return self.labctl("audit", "verify").strip().splitlines()[0][:90]

    def bastion_joins_and_starts(self) -> str:
        made = self.labctl_json(
            "tokens",
            "create",
            "--kind",
            "user",
            "--user",
            "smoke-pxe",
            "--roles",
            "admin",
            "--ttl",
            "10m",
        )
        env = clean_env(LAB_BASTION_CONFIG=str(self.dir / "absent.yaml"))
        self.run(
            [*LAB_BASTION, "join", "--server", self.url, "--token", made["token"],
             "--ca-fingerprint", self.fingerprint, "--name", "smoke-pxe",
             "--data-dir", str(self.bastion_data)],
            env,
        )  # fmt: skip
        # A joined bastion serves its operator API over TLS for labd users: on a free port.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            operator_port = probe.getsockname()[1]
        status = self.daemons.start(
            "bastion",
            [*LAB_BASTION, "--no-dhcp", "--port", "0", "--data-dir", str(self.bastion_data)],
            {
                **env,
                "LAB_BASTION_HOST": "127.0.0.1",
                "LAB_BASTION_OPERATOR_PORT": str(operator_port),
            },
        )
        self.bastion_url = f"http://127.0.0.1:{port_of(status)}"
        self.operator_url = f"https://127.0.0.1:{operator_port}"
        return f"bastion/smoke-pxe at {self.bastion_url}, operators at {self.operator_url}"

    def discover(self) -> str:
        with httpx.Client(base_url=self.bastion_url, timeout=COMMAND_TIMEOUT) as http:
            script = http.get("/dispatch", params={"mac": DISCOVERED_MAC}).text
            if "token=" not in script:
                raise SmokeFailed(f"/dispatch of an unknown MAC is not a discovery:\n{script}")
            token = script.split("token=")[1].split()[0]
            resp = http.post(
                "/api/discover",
                json=inventory(DISCOVERED_MAC),
                headers={"Authorization": f"Bearer {token}"},
            )
        if resp.status_code != 200:
            raise SmokeFailed(f"POST /api/discover answered {resp.status_code}: {resp.text}")
        listed = self.provision_json("list")
        if not any(m["mac"] == DISCOVERED_MAC for m in listed):
            raise SmokeFailed(f"labctl provision list does not show {DISCOVERED_MAC}")
        return f"{DISCOVERED_MAC} discovered"

    def provision_json(self, *args: str) -> Any:
        # The bastion is joined: labctl presents the admin's labd certificate, labd's RBAC decides.
        return self.labctl_json("provision", *args, "--bastion", self.operator_url)

    def install_queued(self) -> str:
        m = self.provision_json("install", DISCOVERED_MAC, INSTALLED_NAME, "--role", "worker")
        if m.get("state") != "queued":
            raise SmokeFailed(f"after provision install the machine is {m.get('state')}")
        return f"{INSTALLED_NAME} queued"

    def install_ks_token(self) -> str:
        with httpx.Client(base_url=self.bastion_url, timeout=COMMAND_TIMEOUT) as http:
            script = http.get("/dispatch", params={"mac": DISCOVERED_MAC}).text
            callback = script.split("token=")[1].split()[0]
            ks = http.get(
                "/kickstart/install.ks", params={"mac": DISCOVERED_MAC, "token": callback}
            )
        if ks.status_code != 200:
            raise SmokeFailed(f"install.ks answered {ks.status_code}: {ks.text}")
        marker = "cat > /etc/lab-agent/enroll.yaml <<'ENROLL'\n"
        if marker not in ks.text:
            raise SmokeFailed("install.ks writes no /etc/lab-agent/enroll.yaml")
        enroll_yaml = ks.text.split(marker, 1)[1].split("\nENROLL\n", 1)[0] + "\n"
        lines = dict(line.partition(": ")[::2] for line in enroll_yaml.splitlines())
        if lines.get("server") != self.url or not lines.get("token"):
            raise SmokeFailed(f"install.ks carries no join token for {self.url}: {lines}")
        if lines.get("ca_fingerprint") != self.fingerprint:
            raise SmokeFailed(f"install.ks pins the wrong CA: {lines.get('ca_fingerprint')}")
        self.enroll_config.write_text(enroll_yaml)
        return "one-time agent token and CA fingerprint embedded"

    def install_token_enrolls(self) -> str:
        # Exactly what lab-agent.service on the installed machine runs before `lab-agent run`.
        env = clean_env(LAB_AGENT_STATE_DIR=str(self.dir / f"agent-{INSTALLED_NAME}"))
        argv = [*LAB_AGENT, "enroll", "--config", str(self.enroll_config), "--if-needed"]
        self.run(argv, env)
        again = self.run(
            [*LAB_AGENT, "enroll", "--config", str(self.enroll_config)],
            clean_env(LAB_AGENT_STATE_DIR=str(self.dir / "x")),
            expect=3,
        )
        if "used" not in again.stderr:
            raise SmokeFailed(f"the second use of the install token said {again.stderr!r}")
        return f"server/{INSTALLED_NAME} enrolled; a second use is refused"

    def metrics_live(self) -> str:
        """Both daemons' /metrics show what this walk did (Operations acceptance)."""
        from lab import pki

        home = self.dir / "home-admin"
        context = pki.client_ssl_context(
            (home / "ca.pem").read_bytes(),
            cert_pem=(home / "cert.pem").read_bytes(),
            key_pem=(home / "key.pem").read_bytes(),
        )
        with httpx.Client(verify=context, timeout=COMMAND_TIMEOUT) as http:
            labd = scrape(http, self.url + "/metrics", {})
        # The joined bastion's certificate names no host (labctl checks its bastion/ subject).
        context.check_hostname = False
        with httpx.Client(verify=context, timeout=COMMAND_TIMEOUT) as http:
            bastion = scrape(http, self.operator_url + "/metrics", {})
        wanted = {
            "labd_agents_connected": (labd, "labd_agents_connected", {}, 2),
            "labd_exec_sessions_total": (labd, "labd_exec_sessions_total", {}, 1),
            "labd request latency count": (
                labd, "labd_http_request_duration_seconds_count", {}, 1),
            "labd audit commit count": (labd, "labd_audit_commit_duration_seconds_count", {}, 1),
            "labd agent enrollments": (
                labd, "labd_enrollments_total", {"kind": "agent", "result": "success"}, 3),
            "bastion discover dispatches": (
                bastion, "lab_bastion_pxe_dispatches_total", {"outcome": "discover"}, 1),
            "bastion install dispatches": (
                bastion, "lab_bastion_pxe_dispatches_total", {"outcome": "install"}, 1),
            "bastion installing machines": (
                bastion, "lab_bastion_machines", {"state": "installing"}, 1),
            "bastion request latency count": (
                bastion, "lab_bastion_http_request_duration_seconds_count", {}, 1),
        }  # fmt: skip
        shown = []
        for title, (samples, name, labels, least) in wanted.items():
            got = total(samples, name, labels)
            if got < least:
                raise SmokeFailed(f"/metrics: {title} is {got:g}, expected at least {least}")
            shown.append(f"{got:g}")
        return "live values: " + " ".join(shown)


Sample = tuple[str, dict[str, str], float]


def scrape(http: httpx.Client, url: str, headers: dict[str, str]) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    resp = http.get(url, headers=headers)
    if resp.status_code != 200:
        raise SmokeFailed(f"GET {url} answered {resp.status_code}: {resp.text[:200]}")
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    ]


def total(samples: list[Sample], name: str, labels: dict[str, str]) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    return sum(
        value
        for got, have, value in samples
        if got == name and all(have.get(k) == v for k, v in labels.items())
    )


def inventory(mac: str) -> dict[str, Any]:
    return {
        "mac": mac,
        # No serial or UUID: the install token would be bound to them, and the agent that
        # enrolls with it runs on this host, not on the inventoried machine.
        "system": {"vendor": "QEMU", "product": "Standard PC"},
        "firmware": "bios",
        "cpu": {"model": "x86", "sockets": 1, "cores": 2, "threads": 2},
        "memory_bytes": 4 * 2**30,
        "disks": [
            {"name": "/dev/sda", "model": "QEMU HARDDISK", "size_bytes": 2**35,
             "serial": "D1", "rotational": False},
        ],
        "nics": [
            {"name": "eth0", "mac": mac, "driver": "e1000", "speed_mbps": 1000, "link": True}
        ],
    }  # fmt: skip


def steps(walk: Walk) -> list[tuple[str, Callable[[], str]]]:
    return [
        ("labd starts", walk.start_labd),
        ("bootstrap login", walk.bootstrap_login),
        ("agent tokens", walk.create_agent_tokens),
        ("two agents enroll and run", walk.agents_enroll_and_run),
        ("both online", walk.both_online),
        ("exec with exit code", walk.exec_exit_code),
        ("logs of a file source", walk.logs),
        ("a viewer is denied exec", walk.viewer_denied),
        ("audit verify", walk.audit_verify),
        ("bastion joins labd and starts", walk.bastion_joins_and_starts),
        ("a MAC is discovered", walk.discover),
        ("install queued", walk.install_queued),
        ("install.ks carries a join token", walk.install_ks_token),
        ("that token enrolls an agent", walk.install_token_enrolls),
        ("/metrics of both daemons are live", walk.metrics_live),
    ]


def run_smoke(workdir: Path, *, say: Callable[[str], None] = print) -> float:
    """Walk every step in ``workdir``; return the total seconds. Raises SmokeFailed.

    Daemons get their notify sockets in a short private directory (a Unix socket path is
    limited to 107 bytes); everything started is stopped before this returns or raises.
    """
    sockets = Path(tempfile.mkdtemp(prefix="lab-smoke-"))
    daemons = Daemons(workdir, sockets)
    walk = Walk(workdir, daemons)
    started = time.monotonic()
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, sockets, ignore_errors=True)
        stack.callback(daemons.stop_all)
        for number, (title, step) in enumerate(steps(walk), 1):
            t0 = time.monotonic()
            try:
                detail = step()
            except SmokeFailed as exc:
                say(f"FAIL {number:2d} {title} ({time.monotonic() - t0:.2f} s): {exc}")
                say(daemons.log_tails())
                raise
            except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                say(f"FAIL {number:2d} {title} ({time.monotonic() - t0:.2f} s): {exc!r}")
                say(daemons.log_tails())
                raise SmokeFailed(f"step {title!r}: {exc!r}") from exc
            say(f"ok   {number:2d} {title:<34} {time.monotonic() - t0:6.2f} s  {detail}")
    total = time.monotonic() - started
    say(f"smoke passed in {total:.1f} s")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="lab-smoke-work-"))
    try:
        run_smoke(workdir)
    except SmokeFailed:
        print(f"smoke FAILED; logs and state kept in {workdir}", file=sys.stderr)
        return 1
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
