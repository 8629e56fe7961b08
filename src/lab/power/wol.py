"""Wake-on-LAN: the standard magic packet (6 x 0xFF, then the MAC 16 times) over UDP."""

from __future__ import annotations

import socket

import trio

from lab.errors import Conflict, Invalid, Unavailable
from lab.power.base import PowerState

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def parse_mac(mac: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or with dashes, or bare hex) as 6 bytes; Invalid otherwise."""
    digits = mac.replace(":", "").replace("-", "").replace(".", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise Invalid(f"not a MAC address: {mac!r}", details={"fields": ["mac"]})
    return raw


def magic_packet(mac: str) -> bytes:
    """The 102-byte Wake-on-LAN payload for ``mac``."""
    return b"\xff" * 6 + parse_mac(mac) * 16


class WolDriver:
    """Powers a machine on by its NIC; it cannot see or change anything else."""

    name = "wol"

    def __init__(
        self,
        mac: str,
        *,
        broadcast: str = "255.255.255.255",
        port: int = 9,
        interface: str | None = None,
    ) -> None:
        self.packet = magic_packet(mac)
        self.mac = mac
        self.broadcast = broadcast
        self.port = port
        self.interface = interface

    async def status(self) -> PowerState:
        return "unknown"

    async def on(self) -> str:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                if self.interface:
                    sock.setsockopt(
                        socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode() + b"\0"
                    )
                await sock.sendto(self.packet, (self.broadcast, self.port))
            except OSError as exc:
                where = f" on {self.interface}" if self.interface else ""
                raise Unavailable(
                    f"wol: cannot send to {self.broadcast}:{self.port}{where}: {exc.strerror}"
                ) from exc
        return f"magic packet for {self.mac} sent to {self.broadcast}:{self.port}"

    def _cannot(self, what: str) -> Conflict:
        return Conflict(f"wol can only power on; {what} needs a BMC or the agent driver")

    async def off(self) -> str:
        raise self._cannot("off")

    async def cycle(self) -> str:
        raise self._cannot("cycle")

    async def reset(self) -> str:
        raise self._cannot("reset")

    async def set_next_boot_pxe(self) -> str:
        raise self._cannot("next boot pxe")
