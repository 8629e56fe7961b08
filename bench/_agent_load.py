"""Load process for bench/agents.py: many real lab-agent connection drivers in one process.

Run: ``python bench/_agent_load.py STATE_ROOT N [FIRST]``, where ``STATE_ROOT/aFIRST …`` (N of
them, FIRST 1 by default) are enrolled agent state dirs. Each simulated agent is
:class:`lab.agent.daemon.Agent` (the same hello, heartbeats, backoff with full jitter and
``retry_after`` honouring as ``lab-agent run``), without running commands. Prints
``online G SECONDS`` once all N agents completed their G-th welcomed session (1: first
connect, 2: back after a labd restart, …), SECONDS on the monotonic clock, and stops on
SIGTERM or when stdin closes.
"""

from __future__ import annotations

import resource
import signal
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import trio

from lab.agent.daemon import Agent, AgentSettings

STOP_TIMEOUT = 15.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def watch(agent: Agent, reached: Counter[int], n: int) -> None:
    generation = 0
    while True:
        await agent.wait_connected(after=generation)
        generation = agent.connections
        reached[generation] += 1
        if reached[generation] == n:
            print(f"online {generation} {time.monotonic():.3f}", flush=True)


async def wait_stdin_closed() -> None:
    stdin = trio.lowlevel.FdStream(0)
    while await stdin.receive_some():
        pass


async def wait_stop() -> None:
    """Until SIGTERM arrives or stdin closes (the bench went away)."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as waiters:

            async def on_signal() -> None:
                async for _ in signals:
                    break
                waiters.cancel_scope.cancel()

            async def on_stdin() -> None:
                await wait_stdin_closed()
                waiters.cancel_scope.cancel()

            waiters.start_soon(on_signal)
            waiters.start_soon(on_stdin)


async def main(root: Path, n: int, first: int = 1) -> None:
    reached: Counter[int] = Counter()
    shutdown = trio.Event()
    async with trio.open_nursery() as watchers:
        with trio.CancelScope() as stopping:
            async with trio.open_nursery() as agents:
                for i in range(first, first + n):
                    settings = AgentSettings(
                        state_dir=root / f"a{i}", renew=False, connect_timeout=30.0
                    )
                    agent = Agent(settings)
                    agents.start_soon(partial(agent.run, shutdown=shutdown))
                    watchers.start_soon(watch, agent, reached, n)
                await wait_stop()
                shutdown.set()  # agents say goodbye (close 1000), bounded:
                stopping.deadline = trio.current_time() + STOP_TIMEOUT
        watchers.cancel_scope.cancel()


if __name__ == "__main__":
    import logging

    # N agents' reconnect warnings during the restart would drown the bench's output.
    logging.basicConfig(level=logging.ERROR)
    raise_fd_limit()
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if sys.argv[3:] else 1)
