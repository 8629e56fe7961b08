"""lab-agent says at once why it cannot connect, and keeps trying.

A real lab-agent process against a real labd whose certificate its CA bundle does not sign, a
port that refuses connections and a listener that hangs up during the TLS handshake. Its
connect timeout is 10 s: the reason must be logged well before that (trio-websocket used to
lose a TLS error in its reader task, and the agent waited the timeout out and logged
``ConnectionTimeout()``), and the agent must retry with its backoff rather than exit.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.e2e.daemons import clean_env
from tests.faults.site import AGENT, Daemon, Site, await_for, start_daemon, start_site

# Two failed attempts (the first at once, the next after a backoff of at most 1 s) well within
# this; an attempt that waited the 10 s connect timeout out would make two take over 20 s.
TWO_ATTEMPTS = 15.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """labd and its enrolled agent's state dir; the site's own agent is stopped (each test
    starts the agent it needs on that state dir)."""
    running = start_site(tmp_path_factory.mktemp("connect"))
    try:
        running.agent.stop()
        yield running
    finally:
        running.stop()


def _agent(site: Site, name: str, state: Path, **env: str) -> Daemon:
    argv = [sys.executable, "-m", "lab.agent.main", "run"]
    daemon, _ = start_daemon(name, argv, clean_env(LAB_AGENT_STATE_DIR=str(state), **env), site.tmp)
    return daemon


def _lines(agent: Daemon, needle: str) -> list[str]:
    return [line for line in agent.text().splitlines() if needle in line]


async def _logged(agent: Daemon, needle: str, count: int, timeout: float) -> list[str]:
    """The agent's log lines containing ``needle`` once there are ``count`` of them."""

    def found() -> list[str] | None:
        assert agent.proc.poll() is None, f"lab-agent exited:\n{agent.text()}"
        lines = _lines(agent, needle)
        return lines if len(lines) >= count else None

    try:
        return await await_for(f"{count} x {needle!r}", found, timeout)
    except trio.TooSlowError:
        raise AssertionError(f"no {count} x {needle!r} in:\n{agent.text()}") from None


async def test_an_untrusted_labd_is_logged_at_once_and_retried(site: Site) -> None:
    state = site.tmp / "untrusted"
    shutil.copytree(site.tmp / AGENT, state)
    # A CA bundle that does not sign labd's certificate (the agent's own certificate).
    (state / "ca.pem").write_bytes((state / "cert.pem").read_bytes())
    agent = _agent(site, "agent-untrusted", state)
    try:
        lines = await _logged(agent, "labd's certificate is not trusted", 2, TWO_ATTEMPTS)
        assert f"cannot connect to {site.url}: labd's certificate is not trusted" in lines[0]
        assert "ConnectionTimeout" not in agent.text()
        # The agent kept trying: with the right CA bundle back, its next attempt connects.
        shutil.copy(site.tmp / AGENT / "ca.pem", state / "ca.pem")
        await _logged(agent, "connected to labd (session", 1, 60.0)
    finally:
        agent.stop()


async def test_a_refused_or_dropped_connection_is_named(site: Site) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        refused = f"https://127.0.0.1:{closed.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
            dropped = f"https://127.0.0.1:{listener.socket.getsockname()[1]}"
            state = site.tmp / "dropped"
            shutil.copytree(site.tmp / AGENT, state)
            # The agent tries its servers in turn.
            agent = _agent(site, "agent-dropped", state, LAB_AGENT_SERVERS=f"{refused},{dropped}")
            try:
                refusals = await _logged(agent, f"cannot connect to {refused}", 2, 2 * TWO_ATTEMPTS)
                assert all("Connection refused" in line for line in refusals), refusals
                hang_ups = await _logged(agent, f"cannot connect to {dropped}", 2, TWO_ATTEMPTS)
                assert all("TLS handshake failed" in line for line in hang_ups), hang_ups
                assert "ConnectionTimeout" not in agent.text()
            finally:
                agent.stop()
            nursery.cancel_scope.cancel()
