"""dnsmasq for DHCP/proxyDHCP and TFTP: config rendering (pure) and a supervisor (trio).

The rendered options follow what was verified against dnsmasq 2.90 and Debian's iPXE builds:
firmware PXE clients get an iPXE binary over TFTP (BIOS ``undionly.kpxe``, x86-64 UEFI
``ipxe.efi``), and iPXE itself, recognised by its user class, gets the HTTP ``/dispatch`` URL.
In proxy mode the answer beside the home router's DHCP must name our address (``,,<ip>``) or
iPXE ignores it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import subprocess
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import trio
from attrs import frozen

from lab.errors import ConfigError, Unavailable
from lab.runtime.metrics import BastionMetrics

log = logging.getLogger("lab.bastion.dnsmasq")

IPXE_FILES = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
IPXE_INSTALL_HINT = "apt-get install ipxe"
DNSMASQ_INSTALL_HINT = "apt-get install dnsmasq (and disable its system service)"


@frozen(kw_only=True)
class DhcpSettings:
    interface: str
    server_ip: str
    http_port: int
    mode: Literal["proxy", "dhcp"] = "proxy"
    network: str = ""
    """proxy mode: the subnet to answer on (e.g. ``192.168.1.0``)."""
    dhcp_range: str = ""
    """dhcp mode: ``start,end[,lease]`` handed to ``dhcp-range``."""
    data_dir: Path
    run_as_root: bool = True


def render_config(s: DhcpSettings) -> str:
    """The dnsmasq configuration file for ``s`` (pure)."""
    ip = str(ipaddress.IPv4Address(s.server_ip))
    dispatch = f"http://{ip}:{s.http_port}/dispatch?mac=${{net0/mac}}"
    lines = [
        "# Rendered by lab-bastion; edits are overwritten on restart.",
        "port=0",  # no DNS: only DHCP and TFTP
        "bind-interfaces",
        f"interface={s.interface}",
        "no-ping",  # else dnsmasq probes each address for ~3 s before offering it
        "log-dhcp",
        "log-facility=-",
        f"dhcp-leasefile={s.data_dir / 'dnsmasq.leases'}",
        f"pid-file={s.data_dir / 'dnsmasq.pid'}",
        "enable-tftp",
        f"tftp-root={s.data_dir / 'tftp'}",
        "dhcp-match=set:bios,option:client-arch,0",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        "dhcp-userclass=set:ipxe,iPXE",
    ]
    if s.run_as_root:
        # Without it dnsmasq drops to nobody, who cannot read a TFTP root in a 0700 data dir.
        lines.append("user=root")
    if s.mode == "dhcp":
        if not s.dhcp_range:
            raise ConfigError("dhcp mode needs dhcp_range (start,end[,lease])")
        lines += [
            f"dhcp-range={s.dhcp_range}",
            f"dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe,,{ip}",
            f"dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,{ip}",
            f"dhcp-boot=tag:ipxe,{dispatch}",
        ]
    else:
        network = str(ipaddress.IPv4Address(s.network))
        lines += [
            f"dhcp-range={network},proxy",
            'pxe-service=tag:!ipxe,x86PC,"labctl (BIOS)",undionly.kpxe',
            'pxe-service=tag:!ipxe,BC_EFI,"labctl (UEFI)",ipxe.efi',
            'pxe-service=tag:!ipxe,X86-64_EFI,"labctl (UEFI)",ipxe.efi',
            # The trailing server address is what makes iPXE accept a proxy answer.
            f"dhcp-boot=tag:ipxe,{dispatch},,{ip}",
        ]
    return "\n".join(lines) + "\n"


def interface_address(interface: str) -> tuple[str, str]:
    """(IPv4 address, network address) of ``interface``; ConfigError when it has none."""
    try:
        out = subprocess.run(
            ["ip", "-j", "-4", "addr", "show", "dev", interface],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot read the address of interface {interface!r}: {exc}") from exc
    for link in json.loads(out or "[]"):
        for addr in link.get("addr_info", []):
            if addr.get("family") == "inet":
                iface = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
                return str(iface.ip), str(iface.network.network_address)
    raise ConfigError(f"interface {interface!r} has no IPv4 address")


def prepare_tftp_root(tftp_root: Path, ipxe_dir: Path) -> None:
    """Copy the iPXE binaries into ``tftp_root`` (copies: dnsmasq may not follow links out)."""
    tftp_root.mkdir(parents=True, exist_ok=True)
    missing = [n for n in IPXE_FILES if not (ipxe_dir / n).exists()]
    if missing:
        raise ConfigError(
            f"iPXE binaries missing in {ipxe_dir}: {', '.join(missing)}",
            details={"hint": IPXE_INSTALL_HINT},
        )
    for name in IPXE_FILES:
        shutil.copyfile(ipxe_dir / name, tftp_root / name)


def find_dnsmasq(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ConfigError(
            f"dnsmasq binary {binary!r} not found", details={"hint": DNSMASQ_INSTALL_HINT}
        )
    return path


class Backoff:
    """Restart delays: 1 s doubling to ``cap``; a run that lasted ``healthy`` s resets it."""

    def __init__(self, *, first: float = 1.0, cap: float = 30.0, healthy: float = 60.0) -> None:
        self.first, self.cap, self.healthy = first, cap, healthy
        self.delay = first

    def after_exit(self, uptime: float) -> float:
        if uptime >= self.healthy:
            self.delay = self.first
        delay = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return delay


# dnsmasq logs its TFTP root last, once every socket (DHCP and TFTP) is bound.
_READY_MARK = "TFTP root is"


async def supervise_dnsmasq(
    settings: DhcpSettings,
    *,
    binary: str = "dnsmasq",
    ipxe_dir: Path = Path("/usr/lib/ipxe"),
    backoff: Backoff | None = None,
    on_line: Callable[[str], None] | None = None,
    metrics: BastionMetrics | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run dnsmasq until cancelled, restarting it with backoff when it exits.

    Each restart counts in ``metrics.dnsmasq_restarts``; each output line is logged (logger
    ``lab.bastion.dnsmasq``) and given to ``on_line``.

    ``task_status.started(pid)`` once the first dnsmasq reported it is running. Raises
    ConfigError (no binary, no iPXE files) before starting, and Unavailable when the first
    dnsmasq exits before it is ready (bad interface, port 67 taken), with its last log lines.
    On cancellation dnsmasq gets SIGTERM, then SIGKILL after 5 s.
    """
    path = find_dnsmasq(binary)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_tftp_root(settings.data_dir / "tftp", ipxe_dir)
    conf = settings.data_dir / "dnsmasq.conf"
    conf.write_text(render_config(settings), encoding="utf-8")
    backoff = backoff or Backoff()
    status: trio.TaskStatus[int] | None = task_status
    while True:
        started_at = trio.current_time()
        ready = trio.Event()
        tail: deque[str] = deque(maxlen=20)
        proc = await trio.lowlevel.open_process(
            [path, "--keep-in-foreground", f"--conf-file={conf}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, proc, ready, tail, on_line)
                if status is not None:
                    with trio.fail_after(30):
                        await _wait_ready_or_exit(proc, ready)
                    if ready.is_set():
                        status.started(proc.pid)
                        status = None
                # The pump ends at EOF, after the exit, so the log tail is complete.
                await proc.wait()
        finally:
            await _stop(proc)
        if status is not None:
            raise Unavailable(
                f"dnsmasq exited with {proc.returncode} before it was ready",
                details={"log": list(tail)},
            )
        uptime = trio.current_time() - started_at
        delay = backoff.after_exit(uptime)
        log.warning("dnsmasq exited with %s; restarting in %.0f s", proc.returncode, delay)
        await trio.sleep(delay)
        if metrics is not None:
            metrics.dnsmasq_restarts.inc()


async def _wait_ready_or_exit(proc: trio.Process, ready: trio.Event) -> None:
    async with trio.open_nursery() as nursery:

        async def exited() -> None:
            await proc.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(exited)
        await ready.wait()
        nursery.cancel_scope.cancel()


async def _pump(
    proc: trio.Process,
    ready: trio.Event,
    tail: deque[str],
    on_line: Callable[[str], None] | None,
) -> None:
    assert proc.stdout is not None
    buf = b""
    async for chunk in proc.stdout:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            log.info("%s", line)
            if on_line is not None:
                on_line(line)
            if _READY_MARK in line:
                ready.set()


async def _stop(proc: trio.Process) -> None:
    if proc.returncode is not None:
        return
    with trio.CancelScope(shield=True):
        proc.terminate()
        with trio.move_on_after(5):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()


__all__ = [
    "Backoff",
    "DhcpSettings",
    "find_dnsmasq",
    "interface_address",
    "prepare_tftp_root",
    "render_config",
    "supervise_dnsmasq",
]
