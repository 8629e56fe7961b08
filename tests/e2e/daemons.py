"""Daemons as real processes for end-to-end tests and benches.

``start_daemon`` starts a program with a private ``NOTIFY_SOCKET`` and returns once it said
``READY=1`` (so the real port is known from its ``STATUS=``); every line it prints goes to a
log file and agent connections that labd logs are tracked, so callers wait on an event rather
than polling. ``Daemon.stop`` ends the whole process session (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

import attrs
import trio

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CONNECTED = re.compile(rb"agent server/(\S+) connected")


def clean_env(**extra: str) -> dict[str, str]:
    prefixes = ("LABD_", "LABCTL_", "LAB_", "NOTIFY_", "WATCHDOG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("DATABASE_URL", None)
    return {**env, **extra}


def labd_env(data_dir: Path, port: int = 0, **extra: str) -> dict[str, str]:
    """labd on 127.0.0.1 with the limits a bench would trip switched off."""
    limits = {
        "LABD_ENROLL_RATE": "0",
        "LABD_RATE_GLOBAL": "0",
        "LABD_RATE_TOKENS": "0",
        # Benches connect hundreds of agents from one loopback address at once.
        "LABD_MAX_UNAUTHENTICATED_PER_ADDRESS": "0",
    }
    return clean_env(
        LABD_CONFIG=str(data_dir.parent / "absent.yaml"),
        LABD_DATA_DIR=str(data_dir),
        LABD_HOST="127.0.0.1",
        LABD_PORT=str(port),
        **{**limits, **extra},
    )


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = rest
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset ``pid``'s VmHWM to its current RSS (Linux clear_refs ``5``); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_comm = stat.rsplit(")", 1)[1].split()
    utime, stime = int(after_comm[11]), int(after_comm[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@attrs.define
class Daemon:
    """One started process; ``lines`` sees every line it writes (stdout and stderr)."""

    name: str
    proc: trio.Process
    log: Path
    connected: set[str] = attrs.Factory(set)
    changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_connected(self, names: set[str]) -> None:
        while not names <= self.connected:
            await self.changed.wait()

    async def stop(self) -> int:
        """SIGTERM the process's session, SIGKILL after STOP_TIMEOUT; its exit status."""
        if self.proc.returncode is None:
            _killpg(self.proc.pid, signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                return await self.proc.wait()
            _killpg(self.proc.pid, signal.SIGKILL)
        return await self.proc.wait()


def _killpg(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


async def start_daemon(
    nursery: trio.Nursery, name: str, argv: list[str], env: dict[str, str], workdir: Path
) -> tuple[Daemon, str]:
    """Start ``argv`` and wait for its ``READY=1``; the daemon and its ``STATUS=`` text."""
    sock_path = workdir / f"{name}.notify"
    sock_path.unlink(missing_ok=True)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    await sock.bind(str(sock_path))
    log = workdir / f"{name}.log"
    with sock:
        proc = await trio.lowlevel.open_process(
            argv,
            env={**env, "NOTIFY_SOCKET": str(sock_path)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        daemon = Daemon(name=name, proc=proc, log=log)
        nursery.start_soon(_read_output, daemon)
        try:
            with trio.fail_after(READY_TIMEOUT):
                while True:
                    datagram = (await sock.recv(4096)).decode()
                    fields = dict(line.partition("=")[::2] for line in datagram.splitlines())
                    if fields.get("READY") == "1":
                        return daemon, fields.get("STATUS", "")
        except BaseException:
            with trio.CancelScope(shield=True):
                await daemon.stop()
            raise


async def _read_output(daemon: Daemon) -> None:
    assert daemon.proc.stdout is not None
    buffered = b""
    with daemon.log.open("ab") as out:
        async for chunk in daemon.proc.stdout:
            out.write(chunk)
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            hits = [m.group(1).decode() for line in lines if (m := CONNECTED.search(line))]
            if hits:
                daemon.connected.update(hits)
                daemon.changed.set()
                daemon.changed = trio.Event()


def port_of(status: str) -> int:
    """The port in labd's ``STATUS=`` text (``... https://127.0.0.1:PORT``)."""
    return int(status.rsplit(":", 1)[1])
