"""The real ``labd`` and ``lab-bastion`` processes speak the systemd notify protocol."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio


def fields_of(datagram: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in datagram.decode().splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def daemon_env(tmp_path: Path, notify_socket: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABD_", "LAB_BASTION_", "NOTIFY_", "WATCHDOG_"))
        and k != "DATABASE_URL"
    }
    env.update(
        LABD_CONFIG=str(tmp_path / "absent.yaml"),
        LABD_DATA_DIR=str(tmp_path / "data"),
        LABD_HOST="127.0.0.1",
        LABD_PORT="0",
        LAB_BASTION_HOST="127.0.0.1",
        NOTIFY_SOCKET=notify_socket,
        WATCHDOG_USEC="200000",
    )
    return env


# READY's STATUS ends with the bound port in both daemons.
COMMANDS = {
    "labd": ["-m", "lab.labd.main"],
    "lab-bastion": ["-m", "lab.bastion.main", "--no-dhcp", "--port", "0", "--data-dir", "{tmp}/b"],
}


@pytest.mark.parametrize("daemon", sorted(COMMANDS))
async def test_ready_watchdog_and_stopping(tmp_path: Path, daemon: str) -> None:
    path = str(tmp_path / "notify.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(path)
    log = (tmp_path / "daemon.log").open("wb")
    proc = await trio.lowlevel.open_process(
        [sys.executable, *(a.format(tmp=tmp_path) for a in COMMANDS[daemon])],
        env=daemon_env(tmp_path, path),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        with sock, trio.fail_after(60):
            ready: dict[str, str] = {}
            while not ready:
                got = fields_of(await sock.recv(4096))
                assert "STOPPING" not in got
                if got.get("READY") == "1":
                    ready = got
            # READY=1 comes after the listener is bound: the port accepts right away.
            port = int(ready["STATUS"].rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.aclose()

            pings = 0
            while pings < 2:
                if fields_of(await sock.recv(4096)).get("WATCHDOG") == "1":
                    pings += 1

            proc.send_signal(signal.SIGTERM)
            while fields_of(await sock.recv(4096)).get("STOPPING") != "1":
                pass
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
    # Shutdown drained and returned normally: no traceback in the output.
    assert b"Traceback" not in (tmp_path / "daemon.log").read_bytes()
