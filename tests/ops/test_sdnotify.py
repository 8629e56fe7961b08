"""lab.runtime.sdnotify against a datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import uuid
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from lab.runtime import sdnotify


def bound_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_unset_socket_is_a_no_op() -> None:
    assert sdnotify.notify("READY=1", environ={}) is False
    assert sdnotify.ready("x", environ={"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1000000"}) is None


def test_relative_path_is_ignored() -> None:
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "relative.sock"}) is False


def test_path_socket_gets_one_datagram(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with bound_socket(path) as sock:
        assert sdnotify.ready("listening on 127.0.0.1:1", environ={"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=listening on 127.0.0.1:1"
        assert sdnotify.stopping(environ={"NOTIFY_SOCKET": path})
        assert sock.recv(4096).split(b"\n")[0] == b"STOPPING=1"


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"labctl-test-{uuid.uuid4().hex}"
    with bound_socket("\0" + name) as sock:
        assert sdnotify.status("busy", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STATUS=busy"


def test_gone_manager_does_not_raise(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("2000000", None, 2.0),
        ("2000000", "self", 2.0),
        ("2000000", "1", None),  # inherited from another process
        ("0", None, None),
        ("soon", None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval(usec: str, pid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid == "self" else pid
    assert sdnotify.watchdog_interval(env) == expected


async def test_watchdog_pings_until_cancelled(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"}
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(path)
    with sock, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sdnotify.watchdog, environ=env))
            for _ in range(3):
                assert await sock.recv(64) == b"WATCHDOG=1"
            nursery.cancel_scope.cancel()


async def test_watchdog_returns_when_not_armed() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(sdnotify.watchdog, environ={}))


async def test_announce_stopping_waits_for_shutdown(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    shutdown = trio.Event()
    with bound_socket(path) as sock, trio.fail_after(10):
        sock.setblocking(False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: sdnotify.announce_stopping(shutdown, environ={"NOTIFY_SOCKET": path})
            )
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(BlockingIOError):
                sock.recv(64)
            shutdown.set()
            await trio.lowlevel.wait_readable(sock)
            assert sock.recv(64).startswith(b"STOPPING=1")
