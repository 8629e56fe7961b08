"""Real BMC emulators on loopback for the power tests: sushy-emulator and pyghmi's BMC."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import attrs
import httpx

HERE = Path(__file__).resolve().parent
USER = "admin"
PASSWORD = "s3cret-bmc"


def _wait_line(
    stream: IO[bytes], pattern: str, timeout: float, proc: subprocess.Popen[bytes]
) -> re.Match[str]:
    """Read ``stream`` until a line matches ``pattern``; fail with what was read so far."""
    seen: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                seen.append(line)
                if m := re.search(pattern, line):
                    return m
    finally:
        sel.close()
    raise AssertionError(
        f"no {pattern!r} within {timeout}s (exit {proc.poll()}): " + "\n".join(seen[-20:])
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _close(proc: subprocess.Popen[bytes]) -> None:
    _stop(proc)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@attrs.define
class Redfish:
    url: str
    state_dir: Path

    def system(self) -> dict[str, object]:
        """What the emulator itself reports for its one system (read past sushy)."""
        with httpx.Client(base_url=self.url, auth=(USER, PASSWORD), timeout=30) as client:
            members = client.get("/redfish/v1/Systems").json()["Members"]
            assert len(members) == 1
            doc: dict[str, object] = client.get(members[0]["@odata.id"]).json()
            return doc


@contextmanager
def redfish_emulator(tmp: Path, *, tls: tuple[Path, Path] | None = None) -> Iterator[Redfish]:
    """``sushy-emulator --fake`` with basic auth, its own state dir, on a free loopback port."""
    import bcrypt

    tmp.mkdir(parents=True, exist_ok=True)
    htpasswd = tmp / "htpasswd"
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{USER}:{digest}\n")
    conf = tmp / "emulator.conf"
    lines = [
        'SUSHY_EMULATOR_LISTEN_IP = "127.0.0.1"',
        "SUSHY_EMULATOR_LISTEN_PORT = 0",
        f"SUSHY_EMULATOR_STATE_DIR = {str(tmp / 'state')!r}",
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}",
    ]
    if tls:
        lines += [
            f"SUSHY_EMULATOR_SSL_CERT = {str(tls[0])!r}",
            f"SUSHY_EMULATOR_SSL_KEY = {str(tls[1])!r}",
        ]
    conf.write_text("\n".join(lines) + "\n")
    exe = Path(sys.executable).with_name("sushy-emulator")
    proc = subprocess.Popen(
        [str(exe), "--fake", "--config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp,
    )
    try:
        assert proc.stderr is not None
        m = _wait_line(proc.stderr, r"Running on (https?://127\.0\.0\.1:\d+)", 60, proc)
        yield Redfish(url=m.group(1), state_dir=tmp / "state")
    finally:
        _close(proc)


@attrs.define
class Ipmi:
    port: int
    proc: subprocess.Popen[bytes]

    def ipmitool(self, *args: str, password: str = PASSWORD) -> list[str]:
        return [
            "ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port),
            "-U", USER, "-P", password, *args,
        ]  # fmt: skip


@contextmanager
def ipmi_simulator() -> Iterator[Ipmi]:
    """tests/power/fakebmc.py (pyghmi's BMC server) on a free loopback UDP port."""
    proc = subprocess.Popen(
        [sys.executable, "-u", str(HERE / "fakebmc.py"), USER, PASSWORD],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        m = _wait_line(proc.stdout, r"^port (\d+)$", 60, proc)
        yield Ipmi(port=int(m.group(1)), proc=proc)
    finally:
        _close(proc)


def bmc_said(ipmi: Ipmi) -> list[str]:
    """Every line the simulator printed since it started (after it stopped)."""
    _stop(ipmi.proc)
    assert ipmi.proc.stdout is not None
    return ipmi.proc.stdout.read().decode().splitlines()


@contextmanager
def silent_tcp() -> Iterator[int]:
    """A loopback TCP port that accepts and never answers: a hung BMC."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@contextmanager
def silent_udp() -> Iterator[int]:
    """A loopback UDP port that swallows everything: an IPMI BMC that is not there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
