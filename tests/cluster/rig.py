"""A labd cluster of real processes on loopback: PostgreSQL, labd replicas, agents, labctl.

Used by the cluster end-to-end test and ``bench/cluster.py``. Replicas share one database and
the CA passphrase (the CA lives encrypted in the database); each has its own data dir and
``LABD_REPLICA_ID``. Readiness is the daemons' systemd ``READY=1`` (see tests/smoke/smoke.py's
:class:`Daemons`, reused here); everything started is stopped by :meth:`ClusterRig.close`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from tests.smoke.smoke import LAB_AGENT, LABCTL, LABD, Daemons, clean_env, port_of

PASSPHRASE = "cluster-test-passphrase"
COMMAND_TIMEOUT = 60.0
POLL_PAUSE = 0.1  # seconds between two tries of a check (see ClusterRig.wait_for)

T = TypeVar("T")


class RigFailed(AssertionError):
    pass


class ClusterRig:
    def __init__(self, workdir: Path, sockets: Path, database_url: str) -> None:
        self.dir = workdir
        self.database_url = database_url
        self.daemons = Daemons(workdir, sockets)
        self.urls: dict[str, str] = {}
        self.home = workdir / "home-admin"
        self.fingerprint = ""

    # --- processes ---

    def start_replica(self, name: str, **extra: str) -> str:
        env = clean_env(
            LABD_CONFIG=str(self.dir / "absent.yaml"),
            LABD_DATA_DIR=str(self.dir / f"labd-{name}"),
            LABD_DATABASE_URL=self.database_url,
            LABD_HOST="127.0.0.1",
            LABD_PORT="0",
            LABD_REPLICA_ID=name,
            LABD_CA_PASSPHRASE=PASSPHRASE,
            LABD_RATE_GLOBAL="0",
            LABD_RATE_TOKENS="0",
            LABD_ENROLL_RATE="0",
            LABD_SHUTDOWN_GRACE="2",
            **extra,
        )
        status = self.daemons.start(f"labd-{name}", LABD, env)
        self.urls[name] = f"https://127.0.0.1:{port_of(status)}"
        return self.urls[name]

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` (its whole process group) and reap it."""
        proc = self.daemons.procs[name]
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        self.daemons.stop_all()

    def logs(self) -> str:
        return self.daemons.log_tails(25)

    # --- labctl ---

    def env(self, server: str | None = None) -> dict[str, str]:
        extra = {"LABCTL_HOME": str(self.home)}
        if server is not None:
            extra["LABCTL_SERVER"] = self.urls[server]
        return clean_env(**extra)

    def run(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        expect: int | None = 0,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )
        if expect is not None and done.returncode != expect:
            raise RigFailed(
                f"{argv[2:]} exited {done.returncode} (expected {expect}):\n"
                f"{done.stderr.strip() or done.stdout.strip()}\n{self.logs()}\n"
                f"=> {argv[2:]} exited {done.returncode} (expected {expect})"
            )
        return done

    def labctl(self, *args: str, on: str | None = None, expect: int | None = 0) -> str:
        return self.run([*LABCTL, *args], self.env(on), expect=expect).stdout

    def labctl_json(self, *args: str, on: str | None = None) -> Any:
        return json.loads(self.labctl(*args, "-o", "json", on=on))

    def login(self, replica: str) -> None:
        from lab import pki

        data = self.dir / f"labd-{replica}"
        self.fingerprint = pki.load_ca_bundle((data / "ca.pem").read_bytes())[0].fingerprint()
        token = (data / "bootstrap-token").read_text().strip()
        self.labctl(
            "login", "--server", self.urls[replica], "--token", token,
            "--ca-fingerprint", self.fingerprint, "--username", "admin",
        )  # fmt: skip

    def agent_token(self, on: str | None = None) -> str:
        made = self.labctl_json("tokens", "create", "--kind", "agent", "--ttl", "10m", on=on)
        token: str = made["token"]
        return token

    # --- agents ---

    def agent_env(self, name: str, servers: list[str]) -> dict[str, str]:
        return clean_env(
            LAB_AGENT_STATE_DIR=str(self.dir / f"agent-{name}"),
            LAB_AGENT_SERVERS=",".join(self.urls[s] for s in servers),
        )

    def start_agent(self, name: str, token: str, *, enroll_on: str, servers: list[str]) -> None:
        env = self.agent_env(name, servers)
        self.run(
            [*LAB_AGENT, "enroll", "--server", self.urls[enroll_on], "--token", token,
             "--hostname", name, "--ca-fingerprint", self.fingerprint],
            env,
        )  # fmt: skip
        self.daemons.start(f"agent-{name}", [*LAB_AGENT, "run"], env)

    def servers(self, on: str | None = None) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.labctl_json("get", "servers", on=on)}

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        """Poll ``check`` (which asks labd through labctl) until it returns a value.

        An agent's presence is only visible through labd's answers, so this polls. A check
        that asks labd costs a labctl process (~0.5 s); a check of a local file costs nothing,
        so tries are at least POLL_PAUSE apart: a spinning check would take a core from the
        daemons it waits for.
        """
        deadline = time.monotonic() + timeout
        while True:
            tried = time.monotonic()
            found = check()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                # what was awaited also goes last: a long log tail must not hide it
                raise RigFailed(f"{what}: not within {timeout:g} s\n{self.logs()}\n=> {what}")
            time.sleep(max(0.0, POLL_PAUSE - (time.monotonic() - tried)))

    def wait_held(self, agent: str, replica: str, timeout: float = 30.0) -> float:
        """Seconds until ``agent`` is online with its lease naming ``replica``."""
        started = time.monotonic()

        def check() -> bool | None:
            item = self.servers().get(agent)
            ok = item is not None and item["status"] == "online" and item["replica"] == replica
            return True if ok else None

        self.wait_for(f"{agent} online on {replica}", check, timeout)
        return time.monotonic() - started
