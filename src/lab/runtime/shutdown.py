"""One shutdown path: SIGTERM/SIGINT set a trio.Event that the daemon's main waits on."""

from __future__ import annotations

import logging
import signal

import trio

log = logging.getLogger(__name__)


async def watch_signals(
    shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Set ``shutdown`` on the first SIGTERM or SIGINT; a second one is left to the default.

    Runs until cancelled (by the daemon's root nursery once shutdown is done).
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if shutdown.is_set():
                continue
            log.info("received %s, shutting down", signal.Signals(signum).name)
            shutdown.set()
