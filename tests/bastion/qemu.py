"""Plumbing for firmware-level PXE boots: a LAN in the client namespace, the bastion as a
process in the server namespace, a home-router dnsmasq, and QEMU VMs on taps.

The namespaces and their veth pair come from the ``net`` fixture of ``test_dnsmasq``; this
module adds a bridge in the client namespace (the LAN switch) holding the veth end and one tap
per VM. Every process is started in its own session and its whole group is killed on exit, so
a dnsmasq child never outlives the bastion that supervised it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Literal

import attrs
import trio

from tests.bastion.test_dnsmasq import Net

QEMU = "qemu-system-x86_64"
E1000_ROM = Path("/usr/lib/ipxe/qemu/pxe-e1000.rom")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
ROUTER_IPV6 = "fd42:1ab::254/64"
BASTION_PORT = 8080  # the server namespace is ours alone: any port is free there

Firmware = Literal["bios", "uefi"]


def qemu_missing() -> str | None:
    """Why a QEMU boot cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"needs {QEMU} (apt-get install qemu-system-x86)"
    if not E1000_ROM.exists():
        return f"needs {E1000_ROM} (apt-get install ipxe-qemu)"
    if not (OVMF_CODE.exists() and OVMF_VARS.exists()):
        return f"needs {OVMF_CODE} (apt-get install ovmf)"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun for the VMs' tap devices"
    return None


class LineLog:
    """Lines of a process's output, with a way to wait for one that contains a needle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.closed = False
        self._changed = trio.Event()

    def feed(self, line: str) -> None:
        self.lines.append(line)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_line(self, needle: str) -> str:
        """The first line containing ``needle``; RuntimeError if the output ends without it."""
        seen = 0
        while True:
            changed = self._changed
            for line in self.lines[seen:]:
                if needle in line:
                    return line
            seen = len(self.lines)
            if self.closed:
                raise RuntimeError(f"{self.name} ended before {needle!r}:\n{self.tail()}")
            await changed.wait()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])


async def _pump(stream: trio.abc.ReceiveStream, out: LineLog) -> None:
    buf = b""
    try:
        async for chunk in stream:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                out.feed(raw.decode(errors="replace").rstrip())
    finally:
        out.close()


@asynccontextmanager
async def running(argv: Sequence[str], out: LineLog, *, grace: float = 5) -> AsyncIterator[int]:
    """Run ``argv`` (output into ``out``) for the body; yields its pid.

    On exit the process gets SIGTERM, then its whole process group SIGKILL after ``grace``
    seconds (or at once if it is gone), so children it started die with it.
    """
    proc = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, proc.stdout, out)
            try:
                yield proc.pid
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(grace):
                    await proc.wait()
            with suppress(ProcessLookupError):  # the whole group is already gone
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


# --- the LAN ---------------------------------------------------------------------------------


@attrs.frozen
class Lan:
    net: Net
    bridge: str
    prefix: str
    """The first three octets of the /24, e.g. ``10.213.40``."""

    def tap(self, index: int) -> str:
        return f"lbt{self.net.client_if[3:]}{index}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def make_lan(net: Net, *, router_ip: str | None = None) -> Lan:
    """A bridge in the client namespace holding the veth end; with ``router_ip`` the bridge
    carries that address for a home router's DHCP. Deleting the namespace deletes it all."""
    ns = net.client_ns
    lan = Lan(net, f"lbr{net.client_if[3:]}", net.network.rsplit(".", 1)[0])
    _ip("-n", ns, "link", "add", lan.bridge, "type", "bridge", "forward_delay", "0")
    _ip("-n", ns, "addr", "flush", "dev", net.client_if)
    _ip("-n", ns, "link", "set", net.client_if, "master", lan.bridge)
    if router_ip:
        _ip("-n", ns, "addr", "add", f"{router_ip}/24", "dev", lan.bridge)
        # nodad: usable at once for the router's IPv6 advertisements.
        _ip("-n", ns, "addr", "add", ROUTER_IPV6, "dev", lan.bridge, "nodad")
    _ip("-n", ns, "link", "set", lan.bridge, "up")
    return lan


def add_tap(lan: Lan, index: int) -> str:
    tap = lan.tap(index)
    ns = lan.net.client_ns
    _ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
    _ip("-n", ns, "link", "set", tap, "master", lan.bridge)
    _ip("-n", ns, "link", "set", tap, "up")
    return tap


# --- the processes ---------------------------------------------------------------------------


@asynccontextmanager
async def bastion_process(
    lan: Lan, data_dir: Path, *, mode: Literal["dhcp", "proxy"]
) -> AsyncIterator[LineLog]:
    """``lab-bastion`` with dnsmasq on the server end of the veth, ready when yielded."""
    net = lan.net
    argv = [
        "ip", "netns", "exec", net.server_ns, "env",
        # The discovery script's kernel URL; nothing answers it, the test stops at /dispatch.
        "LAB_BASTION_REPO=http://repo.invalid/fedora",
        sys.executable, "-c", "from lab.bastion.main import main; main()",
        "--interface", net.server_if, "--mode", mode, "--port", str(BASTION_PORT),
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    if mode == "dhcp":
        argv += ["--dhcp-range", f"{lan.prefix}.100,{lan.prefix}.150,1h"]
    out = LineLog("lab-bastion")
    async with running(argv, out, grace=10):
        with trio.fail_after(30):
            await out.wait_line("lab-bastion ready at")
        yield out


@asynccontextmanager
async def router_process(lan: Lan, data_dir: Path) -> AsyncIterator[LineLog]:
    """A home router's DHCP on the bridge: a plain range, no PXE and no DNS."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        "ip", "netns", "exec", lan.net.client_ns, "dnsmasq", "--keep-in-foreground",
        "--conf-file=/dev/null", "--port=0", "--bind-interfaces", f"--interface={lan.bridge}",
        f"--dhcp-range={lan.prefix}.160,{lan.prefix}.200,1h", "--no-ping", "--log-dhcp",
        "--log-facility=-", f"--dhcp-leasefile={data_dir / 'leases'}",
        f"--pid-file={data_dir / 'pid'}", "--user=root",
        # Like most home routers it advertises IPv6 (SLAAC only, no DHCPv6).
        "--enable-ra", f"--dhcp-range=::,constructor:{lan.bridge},ra-only",
    ]  # fmt: skip
    out = LineLog("router dnsmasq")
    async with running(argv, out):
        with trio.fail_after(10):
            await out.wait_line("DHCP, IP range")
        yield out


def vm_argv(firmware: Firmware, *, tap: str, mac: str, workdir: Path) -> list[str]:
    """QEMU under TCG (iPXE hangs under KVM here) booting from the network only."""
    argv = [
        QEMU, "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none",
        "-serial", f"file:{workdir / f'serial-{firmware}.log'}", "-monitor", "none",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
    ]  # fmt: skip
    if firmware == "bios":
        # SeaBIOS runs the e1000 iPXE ROM, which asks for /dispatch directly.
        return [*argv, "-boot", "n", "-device", f"e1000,netdev=n0,mac={mac},romfile={E1000_ROM}"]
    # OVMF's own PXE (no option ROM) fetches ipxe.efi over TFTP, which then asks for /dispatch.
    vars_copy = workdir / f"vars-{mac.replace(':', '')}.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    return [
        *argv,
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1",
    ]  # fmt: skip


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))


@attrs.frozen
class Boot:
    firmware: Firmware
    mac: str
    seconds: float


async def boot_to_dispatch(
    lan: Lan, bastion: LineLog, firmware: Firmware, *, index: int, workdir: Path, limit: float
) -> Boot:
    """Start a VM on a new tap, wait until the bastion logs its /dispatch, kill the VM.

    Raises AssertionError with the VM's serial console and the bastion's log when the request
    does not arrive within ``limit`` seconds.
    """
    tap = add_tap(lan, index)
    mac = random_mac()
    argv = ["ip", "netns", "exec", lan.net.client_ns, *vm_argv(
        firmware, tap=tap, mac=mac, workdir=workdir
    )]  # fmt: skip
    out = LineLog(f"qemu {firmware}")
    started = trio.current_time()
    async with running(argv, out, grace=2):
        with trio.move_on_after(limit) as scope:
            await bastion.wait_line(f"dispatch {mac}")
        seconds = trio.current_time() - started
    if scope.cancelled_caught:
        serial = workdir / f"serial-{firmware}.log"
        console = serial.read_text(errors="replace")[-3000:] if serial.exists() else ""
        raise AssertionError(
            f"{firmware} VM {mac} did not reach /dispatch in {limit} s\n"
            f"--- qemu ---\n{out.tail()}\n--- serial ---\n{console}\n"
            f"--- bastion ---\n{bastion.tail(40)}"
        )
    return Boot(firmware, mac, seconds)


async def boot_all(
    lan: Lan, bastion: LineLog, firmwares: Sequence[Firmware], *, workdir: Path, limit: float
) -> dict[Firmware, Boot]:
    """Boot one VM per firmware at the same time on the same LAN (each on its own tap)."""
    boots: dict[Firmware, Boot] = {}

    async def one(index: int, firmware: Firmware) -> None:
        boots[firmware] = await boot_to_dispatch(
            lan, bastion, firmware, index=index, workdir=workdir, limit=limit
        )

    async with trio.open_nursery() as nursery:
        for index, firmware in enumerate(firmwares):
            nursery.start_soon(one, index, firmware)
    return boots
