"""A tiny PXE client for tests, run inside a network namespace: one DHCPDISCOVER (with the
options firmware PXE or iPXE send), prints the offer as JSON; or one TFTP read.

    python pxeclient.py dhcp IFACE ARCH [--ipxe]
    python pxeclient.py tftp SERVER FILENAME
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
from pathlib import Path

MAGIC = b"\x63\x82\x53\x63"


def _opt(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def discover(iface: str, arch: int, ipxe: bool) -> dict[str, object]:
    address = Path(f"/sys/class/net/{iface}/address").read_text().strip()
    mac = bytes.fromhex(address.replace(":", ""))
    xid = os.urandom(4)
    header = struct.pack(
        "!BBBB4sHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4), bytes(4), bytes(4), bytes(4)
    )
    chaddr = mac + bytes(10)
    options = _opt(53, b"\x01") + _opt(60, f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode())
    options += _opt(93, struct.pack("!H", arch)) + _opt(94, b"\x01\x02\x01")
    options += _opt(97, b"\x00" + bytes(16))
    if ipxe:
        options += _opt(77, b"iPXE")
    packet = header + chaddr + bytes(64) + bytes(128) + MAGIC + options + b"\xff"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("0.0.0.0", 68))
    s.settimeout(10)
    s.sendto(packet, ("255.255.255.255", 67))
    while True:
        data, _ = s.recvfrom(4096)
        if data[4:8] == xid and data[0] == 2:
            break
    siaddr = socket.inet_ntoa(data[20:24])
    file = data[108:236].split(b"\0", 1)[0].decode()
    opts: dict[str, str] = {}
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        opts[str(code)] = data[i + 2 : i + 2 + length].hex()
        i += 2 + length
    return {
        "siaddr": siaddr,
        "file": file,
        "yiaddr": socket.inet_ntoa(data[16:20]),
        "options": opts,
    }


def tftp(server: str, name: str) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(b"\x00\x01" + name.encode() + b"\0octet\0", (server, 69))
    out, expected = b"", 1
    while True:
        data, peer = s.recvfrom(65536)
        opcode, block = struct.unpack("!HH", data[:4])
        if opcode == 5:
            return {"error": data[4:].split(b"\0")[0].decode()}
        if opcode == 3 and block == expected:
            out += data[4:]
            s.sendto(struct.pack("!HH", 4, block), peer)
            expected += 1
            if len(data) - 4 < 512:
                return {"size": len(out), "sha256": hashlib.sha256(out).hexdigest()}


if __name__ == "__main__":
    if sys.argv[1] == "dhcp":
        result = discover(sys.argv[2], int(sys.argv[3]), "--ipxe" in sys.argv)
    else:
        result = tftp(sys.argv[2], sys.argv[3])
    print(json.dumps(result))
