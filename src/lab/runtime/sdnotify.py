"""The systemd notify protocol: tell the service manager we are ready, alive or stopping.

A ``Type=notify`` unit starts the daemon with ``$NOTIFY_SOCKET`` (a filesystem path, or an
abstract socket spelled with a leading ``@``); each state change is one datagram of
``KEY=value`` lines. With ``WatchdogSec=`` set, systemd also passes ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``) and restarts the service if ``WATCHDOG=1`` stops arriving. Outside systemd
nothing is set and every function here does nothing, so daemons call them unconditionally.

Sending never blocks and never raises: a service manager that went away must not take the
daemon down with it (a failed send is logged at debug level).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import trio

log = logging.getLogger(__name__)


def _address(environ: Mapping[str, str]) -> str | None:
    path = environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte instead of "@".
        return "\0" + path[1:]
    if not path.startswith("/"):
        log.debug("ignoring NOTIFY_SOCKET %r: not a path or abstract socket", path)
        return None
    return path


def notify(*states: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) as one datagram.

    Returns True if it was sent, False when ``$NOTIFY_SOCKET`` is unset or the send failed.
    """
    address = _address(os.environ if environ is None else environ)
    if address is None or not states:
        return False
    message = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, socket.MSG_DONTWAIT, address)
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", states, exc)
        return False
    return True


def ready(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """The daemon is serving (sockets bound): ``READY=1`` and an optional ``STATUS=``."""
    states = ["READY=1"]
    if status:
        states.append(f"STATUS={status}")
    return notify(*states, environ=environ)


def status(text: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """A one-line status that ``systemctl status`` shows."""
    return notify(f"STATUS={text}", environ=environ)


def stopping(*, environ: Mapping[str, str] | None = None) -> bool:
    """The daemon is beginning its shutdown (``STOPPING=1``)."""
    return notify("STOPPING=1", "STATUS=shutting down", environ=environ)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between required ``WATCHDOG=1`` pings, or None when no watchdog is armed.

    None also when ``WATCHDOG_PID`` names another process (the variables were inherited).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec or _address(env) is None:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1_000_000 if value > 0 else None


async def watchdog(
    *,
    environ: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping ``WATCHDOG=1`` every half watchdog interval until cancelled.

    Returns at once (after ``task_status.started()``) when no watchdog is armed. The pings
    come from the trio loop itself, so a loop that stops scheduling tasks stops them too and
    systemd restarts the daemon. Start it in the daemon's root nursery.
    """
    interval = watchdog_interval(environ)
    task_status.started()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1", environ=environ)
        await trio.sleep(interval / 2)


async def announce_stopping(
    shutdown: trio.Event, *, environ: Mapping[str, str] | None = None
) -> None:
    """Send ``STOPPING=1`` as soon as ``shutdown`` is set, then return."""
    await shutdown.wait()
    stopping(environ=environ)
