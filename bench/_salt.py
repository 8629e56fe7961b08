"""A private Salt master and minion for baselines: their own config, keys and ports in a temp dir.

``async with private_salt(tmp, bindir) as salt:`` yields the ``salt`` argv prefix
(``salt -c DIR minion1``) once the minion answers ``test.ping``, or ``None`` when ``bindir`` has
no salt-master (`nox -s bench -- --with-salt` installs Salt into its own virtualenv and passes
its bin directory). Both daemons listen on 127.0.0.1 only, on free ports; the minion's key is
accepted automatically (a throwaway master that exists for the length of one bench). Both are
stopped (SIGTERM, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

MINION = "minion1"
READY_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(tmp: Path, role: str, publish: int, ret: int) -> str:
    common = {
        "root_dir": tmp / "root",
        "pki_dir": tmp / "pki" / role,
        "cachedir": tmp / "cache" / role,
        "sock_dir": tmp / "sock" / role,
        "log_file": tmp / f"{role}.log",
        "pidfile": tmp / f"{role}.pid",
        "user": "root" if os.geteuid() == 0 else os.environ.get("USER", "root"),
        "publish_port": publish,
    }
    if role == "master":
        extra = {"interface": "127.0.0.1", "ret_port": ret, "auto_accept": True}
    else:
        extra = {"id": MINION, "master": "127.0.0.1", "master_port": ret}
    return "".join(f"{k}: {v}\n" for k, v in {**common, **extra}.items())


@asynccontextmanager
async def private_salt(tmp: Path, bindir: Path | None) -> AsyncIterator[list[str] | None]:
    """Run salt-master and salt-minion until the block ends; yield the ``salt`` argv prefix."""
    if bindir is None or not (bindir / "salt-master").exists():
        yield None
        return
    conf = tmp / "etc"
    conf.mkdir(parents=True, exist_ok=True)
    publish, ret = _free_port(), _free_port()
    (conf / "master").write_text(_config(tmp, "master", publish, ret))
    (conf / "minion").write_text(_config(tmp, "minion", publish, ret))
    procs = [
        subprocess.Popen(
            [str(bindir / name), "-c", str(conf), "-l", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for name in ("salt-master", "salt-minion")
    ]
    salt = [str(bindir / "salt"), "-c", str(conf), MINION]
    try:
        with trio.fail_after(READY_TIMEOUT):
            while True:
                ping = await trio.run_process(
                    [*salt, "test.ping", "--timeout", "5"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                if ping.returncode == 0 and b"True" in ping.stdout:
                    break
                await trio.sleep(1)
        yield salt
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
