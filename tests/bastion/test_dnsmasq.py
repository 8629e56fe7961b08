"""dnsmasq: config rendering, and the real thing answering PXE clients in network namespaces."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from lab.bastion.dnsmasq import Backoff, DhcpSettings, render_config, supervise_dnsmasq
from lab.errors import ConfigError, Unavailable

CLIENT = Path(__file__).with_name("pxeclient.py")


def settings(tmp_path: Path, **kw: object) -> DhcpSettings:
    base = DhcpSettings(
        interface="eth9",
        server_ip="10.9.0.1",
        http_port=8080,
        network="10.9.0.0",
        data_dir=tmp_path,
    )
    return attrs.evolve(base, **kw)


def test_proxy_config_follows_the_verified_flags(tmp_path: Path) -> None:
    conf = render_config(settings(tmp_path)).splitlines()
    for line in [
        "port=0",
        "bind-interfaces",
        "interface=eth9",
        "no-ping",
        "log-dhcp",
        "log-facility=-",
        "enable-tftp",
        f"tftp-root={tmp_path / 'tftp'}",
        "dhcp-range=10.9.0.0,proxy",
        "dhcp-userclass=set:ipxe,iPXE",
        "dhcp-match=set:bios,option:client-arch,0",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        'pxe-service=tag:!ipxe,x86PC,"labctl (BIOS)",undionly.kpxe',
        'pxe-service=tag:!ipxe,BC_EFI,"labctl (UEFI)",ipxe.efi',
        'pxe-service=tag:!ipxe,X86-64_EFI,"labctl (UEFI)",ipxe.efi',
        "dhcp-boot=tag:ipxe,http://10.9.0.1:8080/dispatch?mac=${net0/mac},,10.9.0.1",
        "user=root",
    ]:
        assert line in conf


def test_dhcp_config(tmp_path: Path) -> None:
    conf = render_config(settings(tmp_path, mode="dhcp", dhcp_range="10.9.0.50,10.9.0.99,1h"))
    lines = conf.splitlines()
    assert "dhcp-range=10.9.0.50,10.9.0.99,1h" in lines
    assert "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe,,10.9.0.1" in lines
    assert "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,10.9.0.1" in lines
    assert "dhcp-boot=tag:ipxe,http://10.9.0.1:8080/dispatch?mac=${net0/mac}" in lines
    with pytest.raises(ConfigError):
        render_config(settings(tmp_path, mode="dhcp"))


def test_backoff_doubles_to_the_cap_and_resets_after_a_healthy_run() -> None:
    b = Backoff(first=1, cap=8, healthy=60)
    assert [b.after_exit(0.1) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert b.after_exit(120) == 1


async def test_missing_dnsmasq_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        await supervise_dnsmasq(settings(tmp_path), binary="no-such-dnsmasq-binary")
    assert "apt-get install dnsmasq" in info.value.details["hint"]


# --- real dnsmasq in network namespaces ------------------------------------------------------


def _netns_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None or shutil.which("dnsmasq") is None:
        return "needs ip and dnsmasq (apt-get install dnsmasq iproute2)"
    if not Path("/usr/lib/ipxe/undionly.kpxe").exists():
        return "needs the ipxe package"
    probe = f"labprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None if done.returncode == 0 else "cannot create network namespaces here"


@attrs.frozen
class Net:
    server_ns: str
    client_ns: str
    server_if: str
    client_if: str
    server_ip: str
    network: str


@pytest.fixture
def net() -> Iterator[Net]:
    reason = _netns_available()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}{os.urandom(2).hex()}"
    octet = int.from_bytes(os.urandom(1)) % 200 + 20
    n = Net(
        f"lbs{tag}", f"lbc{tag}", f"lba{tag}", f"lbb{tag}", f"10.213.{octet}.1", f"10.213.{octet}.0"
    )
    cmds = [
        ["ip", "netns", "add", n.server_ns],
        ["ip", "netns", "add", n.client_ns],
        ["ip", "link", "add", n.server_if, "type", "veth", "peer", "name", n.client_if],
        ["ip", "link", "set", n.server_if, "netns", n.server_ns],
        ["ip", "link", "set", n.client_if, "netns", n.client_ns],
        ["ip", "-n", n.server_ns, "addr", "add", f"{n.server_ip}/24", "dev", n.server_if],
        ["ip", "-n", n.client_ns, "addr", "add", f"10.213.{octet}.2/24", "dev", n.client_if],
        ["ip", "-n", n.server_ns, "link", "set", n.server_if, "up"],
        ["ip", "-n", n.client_ns, "link", "set", n.client_if, "up"],
        ["ip", "-n", n.server_ns, "link", "set", "lo", "up"],
        ["ip", "-n", n.client_ns, "link", "set", "lo", "up"],
    ]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        yield n
    finally:
        subprocess.run(["ip", "netns", "del", n.server_ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", n.client_ns], capture_output=True)


def _wrapper(tmp_path: Path, ns: str) -> str:
    """A dnsmasq 'binary' that execs the real one inside the server namespace (same pid)."""
    path = tmp_path / "dnsmasq-in-ns"
    path.write_text(f'#!/bin/sh\nexec ip netns exec {ns} dnsmasq "$@"\n')
    path.chmod(0o755)
    return str(path)


async def _client(n: Net, *args: str) -> dict[str, object]:
    done = await trio.run_process(
        ["ip", "netns", "exec", n.client_ns, sys.executable, str(CLIENT), *args],
        capture_stdout=True,
        capture_stderr=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _sha(name: str) -> str:
    return hashlib.sha256(Path("/usr/lib/ipxe", name).read_bytes()).hexdigest()


@pytest.mark.netns
async def test_full_dhcp_answers_pxe_and_ipxe_and_serves_tftp(
    net: Net, tmp_path: Path, nursery: trio.Nursery
) -> None:
    prefix = net.network.rsplit(".", 1)[0]
    s = DhcpSettings(
        interface=net.server_if,
        server_ip=net.server_ip,
        http_port=8080,
        mode="dhcp",
        dhcp_range=f"{prefix}.100,{prefix}.150,1h",
        data_dir=tmp_path / "dnsmasq",
    )
    lines: list[str] = []
    with trio.fail_after(60):
        pid = await nursery.start(
            partial(
                supervise_dnsmasq, s, binary=_wrapper(tmp_path, net.server_ns), on_line=lines.append
            )
        )
        assert pid > 0
        bios = await _client(net, "dhcp", net.client_if, "0")
        assert bios["file"] == "undionly.kpxe" and bios["siaddr"] == net.server_ip
        assert str(bios["yiaddr"]).startswith(prefix + ".1")
        efi = await _client(net, "dhcp", net.client_if, "7")
        assert efi["file"] == "ipxe.efi"
        ipxe = await _client(net, "dhcp", net.client_if, "7", "--ipxe")
        assert ipxe["file"] == f"http://{net.server_ip}:8080/dispatch?mac=${{net0/mac}}"
        got = await _client(net, "tftp", net.server_ip, "undionly.kpxe")
        size = Path("/usr/lib/ipxe/undionly.kpxe").stat().st_size
        assert got == {"size": size, "sha256": _sha("undionly.kpxe")}
        missing = await _client(net, "tftp", net.server_ip, "../../etc/shadow")
        assert "error" in missing
    assert any("DHCPOFFER" in line for line in lines)  # log lines were forwarded


@pytest.mark.netns
async def test_proxy_dhcp_answers_ipxe_with_dispatch_and_server(
    net: Net, tmp_path: Path, nursery: trio.Nursery
) -> None:
    s = DhcpSettings(
        interface=net.server_if,
        server_ip=net.server_ip,
        http_port=8181,
        mode="proxy",
        network=net.network,
        data_dir=tmp_path / "dnsmasq",
    )
    with trio.fail_after(60):
        await nursery.start(partial(supervise_dnsmasq, s, binary=_wrapper(tmp_path, net.server_ns)))
        ipxe = await _client(net, "dhcp", net.client_if, "0", "--ipxe")
        # A proxy answer hands out no address, and names our server (else iPXE ignores it).
        assert ipxe["yiaddr"] == "0.0.0.0"
        assert ipxe["file"] == f"http://{net.server_ip}:8181/dispatch?mac=${{net0/mac}}"
        assert ipxe["siaddr"] == net.server_ip
        firmware = await _client(net, "dhcp", net.client_if, "0")
        # Firmware PXE gets the PXE menu (option 43) pointing at the boot server.
        assert "43" in firmware["options"]  # type: ignore[operator]
        assert firmware["options"]["60"] == b"PXEClient".hex()  # type: ignore[index]


@pytest.mark.netns
async def test_dnsmasq_that_cannot_start_is_unavailable(net: Net, tmp_path: Path) -> None:
    s = DhcpSettings(
        interface="nosuchif0",
        server_ip=net.server_ip,
        http_port=8080,
        network=net.network,
        data_dir=tmp_path / "dnsmasq",
    )
    with trio.fail_after(30), pytest.raises(Unavailable) as info:
        await supervise_dnsmasq(s, binary=_wrapper(tmp_path, net.server_ns))
    assert any("nosuchif0" in line for line in info.value.details["log"])


@pytest.mark.netns
async def test_dnsmasq_is_restarted_after_it_dies(
    net: Net, tmp_path: Path, nursery: trio.Nursery
) -> None:
    s = DhcpSettings(
        interface=net.server_if,
        server_ip=net.server_ip,
        http_port=8080,
        network=net.network,
        data_dir=tmp_path / "dnsmasq",
    )
    started = trio.Event()
    count = [0]

    def on_line(line: str) -> None:
        if "TFTP root is" in line:
            count[0] += 1
            if count[0] == 2:
                started.set()

    with trio.fail_after(30):
        pid = await nursery.start(
            partial(
                supervise_dnsmasq,
                s,
                binary=_wrapper(tmp_path, net.server_ns),
                backoff=Backoff(first=0.1),
                on_line=on_line,
            )
        )
        os.kill(pid, 9)
        await started.wait()
    ipxe = await _client(net, "dhcp", net.client_if, "0", "--ipxe")
    assert ipxe["siaddr"] == net.server_ip
