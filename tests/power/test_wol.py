"""The Wake-on-LAN packet, sent and captured inside a network namespace this test creates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from lab.errors import Conflict, Invalid
from lab.power.wol import WolDriver, magic_packet

MAC = "52:54:00:12:34:56"
ROOT = Path(__file__).resolve().parents[2]

CAPTURE = r"""
import socket, sys
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
sock.bind((sys.argv[1], 0))
sock.settimeout(60)
print("ready", flush=True)
while True:
    frame = sock.recv(65535)
    # IPv4 over Ethernet, UDP, destination port 9
    if frame[12:14] == b"\x08\x00" and frame[23] == 17:
        ihl = (frame[14] & 0x0F) * 4
        udp = frame[14 + ihl:]
        if int.from_bytes(udp[2:4], "big") == 9:
            print(frame.hex(), flush=True)
            break
"""

SEND = r"""
import sys, trio
from lab.power.wol import WolDriver
print(trio.run(WolDriver(sys.argv[1], broadcast=sys.argv[2], interface=sys.argv[3]).on))
"""


def test_magic_packet_layout() -> None:
    packet = magic_packet("52-54-00-12-34-56")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("525400123456") * 16
    with pytest.raises(Invalid):
        magic_packet("52:54:00:12:34")


async def test_wol_only_powers_on() -> None:
    drv = WolDriver(MAC)
    assert await drv.status() == "unknown"
    for action in (drv.off, drv.cycle, drv.reset, drv.set_next_boot_pxe):
        with pytest.raises(Conflict, match="wol can only power on"):
            await action()


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip)")
    name = f"labwol-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (
            ["link", "add", "wola", "type", "veth", "peer", "name", "wolb"],
            ["addr", "add", "10.77.0.1/24", "dev", "wola"],
            ["link", "set", "wola", "up"],
            ["link", "set", "wolb", "up"],
        ):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def test_magic_packet_on_the_wire(netns: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with trio.fail_after(60):
        capture = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", netns, sys.executable, "-c", CAPTURE, "wolb"],
            stdout=subprocess.PIPE,
        )
        try:
            assert capture.stdout is not None
            lines = capture.stdout
            buf = b""
            while b"ready\n" not in buf:
                chunk = await lines.receive_some()
                assert chunk, "capture ended before it was ready"
                buf += chunk
            sent = await trio.run_process(
                ["ip", "netns", "exec", netns, sys.executable, "-c", SEND,
                 MAC, "10.77.0.255", "wola"],
                capture_stdout=True, env=env,
            )  # fmt: skip
            assert b"sent to 10.77.0.255:9" in sent.stdout
            buf = buf.split(b"ready\n", 1)[1]
            while b"\n" not in buf:
                chunk = await lines.receive_some()
                assert chunk, "capture ended without a frame"
                buf += chunk
        finally:
            with trio.move_on_after(10):
                capture.kill()
                await capture.wait()
            if capture.stdout is not None:
                await capture.stdout.aclose()
    frame = bytes.fromhex(buf.split(b"\n", 1)[0].decode())
    assert frame[:6] == b"\xff" * 6  # Ethernet broadcast
    ihl = (frame[14] & 0x0F) * 4
    assert frame[14 + 16 : 14 + 20] == bytes([10, 77, 0, 255])  # IPv4 destination
    udp = frame[14 + ihl :]
    assert int.from_bytes(udp[2:4], "big") == 9
    assert udp[8:] == magic_packet(MAC)  # byte for byte
