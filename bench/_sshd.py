"""A private sshd for baselines: its own port, host key, authorized key and config in a temp dir.

``async with private_sshd() as ssh:`` yields the ``ssh`` argv prefix (``ssh -p PORT -i KEY …
127.0.0.1``) or ``None`` when openssh-server is not installed. Nothing outside the temp dir is
touched except, when running as root, sshd's compiled-in privilege separation directory
(``/run/sshd``), which the Debian package normally creates at boot and sshd refuses to start
without. ``StrictModes no`` because the temp dir is not owned and moded the way sshd checks
a home directory; ``PermitRootLogin prohibit-password`` lets root log in with the key only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

PRIVSEP_DIR = Path("/run/sshd")
READY_TIMEOUT = 10.0


def sshd_path() -> str | None:
    found = shutil.which("sshd")
    if found is None and Path("/usr/sbin/sshd").exists():
        found = "/usr/sbin/sshd"
    if found is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return None
    return found


@asynccontextmanager
async def private_sshd(tmp: Path) -> AsyncIterator[list[str] | None]:
    """Run sshd on a free loopback port until the block ends; yield the ssh argv prefix."""
    sshd = sshd_path()
    if sshd is None:
        yield None
        return
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True
        )
    (tmp / "authorized_keys").write_bytes((tmp / "user.pub").read_bytes())
    (tmp / "authorized_keys").chmod(0o600)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        f"PidFile {tmp / 'sshd.pid'}\nUsePAM no\n"
    )
    argv = [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(tmp / "user"),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={tmp / 'known_hosts'}",
        "127.0.0.1",
    ]
    log = (tmp / "sshd.log").open("wb")
    proc = await trio.lowlevel.open_process(
        [sshd, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=log, stderr=log
    )
    try:
        if await _wait_listening(port, proc):
            yield argv
        else:
            yield None
    finally:
        proc.terminate()
        await proc.wait()
        log.close()


async def _wait_listening(port: int, proc: trio.Process) -> bool:
    """Connect until sshd accepts (it binds after parsing its config) or it exits."""
    with trio.move_on_after(READY_TIMEOUT):
        while proc.returncode is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.01)  # not bound yet; sshd gives no readiness signal
                continue
            await stream.aclose()
            return True
    return False
