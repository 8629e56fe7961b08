"""A stand-in ``systemctl`` for tests: put first on a node's PATH (cluster_exec_path).

It runs a unit's ``ExecStart`` line as a detached process (its own session, so it outlives
the agent's exec), waits like ``Type=notify`` until the process says it is up (a ready file)
or dies (then prints the end of its log and fails, as systemd's "Job for k3s.service
failed"), and records every call. ``stop`` sends SIGTERM and waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class Units:
    def __init__(self, root: str, record_to: str) -> None:
        self.root = Path(root)
        self.record_to = record_to
        self.run_dir = self.root / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def unit_file(self, unit: str) -> Path:
        return self.root / "etc/systemd/system" / f"{unit.removesuffix('.service')}.service"

    def pid(self, unit: str) -> int | None:
        path = self.run_dir / f"{unit}.pid"
        if not path.exists():
            return None
        pid = int(path.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        # a zombie (our child already exited) is not running
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"):
            return None
        return pid

    def start(self, unit: str) -> int:
        if self.pid(unit) is not None:
            return 0
        lines = self.unit_file(unit).read_text().splitlines()
        exec_start = next(line for line in lines if line.startswith("ExecStart="))
        argv = exec_start.removeprefix("ExecStart=").split()
        ready = self.run_dir / f"{unit}.ready"
        ready.unlink(missing_ok=True)
        log = self.run_dir / f"{unit}.log"
        env = {**os.environ, "STANDIN_READY_FILE": str(ready)}
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
        (self.run_dir / f"{unit}.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ready.exists():
                return 0
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                print(f"Job for {unit}.service failed: " + " | ".join(tail), file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"Job for {unit}.service timed out", file=sys.stderr)
        return 1

    def stop(self, unit: str) -> int:
        pid = self.pid(unit)
        if pid is None:
            return 0
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.pid(unit) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid(unit) is not None:
            os.killpg(pid, signal.SIGKILL)
        (self.run_dir / f"{unit}.pid").unlink(missing_ok=True)
        return 0


def main(*, root: str, record_to: str) -> None:
    args = sys.argv[1:]
    units = Units(root, record_to)
    with open(record_to, "a") as f:
        f.write(json.dumps({"t": time.time(), "systemctl": args, "root": root}) + "\n")
    verb, names = (args[0], args[1:]) if args else ("", [])
    unit = names[0].removesuffix(".service") if names else ""
    if verb == "daemon-reload":
        raise SystemExit(0)
    if verb in ("enable", "disable"):
        if not units.unit_file(unit).exists() and verb == "enable":
            print(
                f"Failed to enable unit: Unit file {unit}.service does not exist.", file=sys.stderr
            )
            raise SystemExit(1)
        raise SystemExit(0)
    if verb == "start":
        raise SystemExit(units.start(unit))
    if verb == "stop":
        raise SystemExit(units.stop(unit))
    if verb == "restart":
        units.stop(unit)
        raise SystemExit(units.start(unit))
    if verb == "is-active":
        active = units.pid(unit) is not None
        print("active" if active else "inactive")
        raise SystemExit(0 if active else 3)
    print(f"stand-in systemctl: unknown command {verb!r}", file=sys.stderr)
    raise SystemExit(1)
