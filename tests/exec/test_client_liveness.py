"""A client that goes silent (no FIN, nothing read or sent) loses its streams after labd's ping
timeout; the audit entry says so and the remote process is gone. A live client answers pings."""

from __future__ import annotations

import json
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

import trio

from lab.agent.daemon import run_agent
from lab.client.wsclient import StreamSession, StreamState, connect
from lab.proto import Channel, CloseCode, decode, encode
from lab.proto.messages import ExecStarted, Ping, Request, Response
from tests.hub.hubtools import enroll_state, labd_with_hub, wait_process_gone

PING = {"client_ping_interval": 0.3, "client_ping_timeout": 1.5}


def exec_ends(data_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(data_dir / "labd.db")
    try:
        rows = db.execute(
            "SELECT result, details FROM audit WHERE action = 'exec:run' ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    entries = [{"result": r, "details": json.loads(d)} for r, d in rows]
    return [e for e in entries if e["details"].get("phase") == "end"]


async def test_silent_client_is_ended_after_the_ping_timeout(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path, **PING) as labd:
            admin = await labd.running.admin()
            settings = await enroll_state(labd.running, admin, "n1", tmp_path / "n1")
            shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
                session_id = await agent.wait_connected()
                context = labd.running.ssl_context(admin, alpn=["http/1.1"])
                try:
                    with trio.CancelScope() as vanish:
                        async with connect(labd.running.url, "/ws/exec", context) as ws:
                            request = Request(
                                request_id="1",
                                method="exec",
                                params={
                                    "targets": ["n1"],
                                    "start": {"argv": ["sleep", "60"]},
                                    "keepalive": True,
                                },
                            )
                            await ws.send_message(encode(request))
                            assert isinstance(decode(await ws.get_message()), Response)
                            started = decode(await ws.get_message())
                            assert isinstance(started, ExecStarted)
                            pid = started.pid
                            # From here on the client reads nothing and sends nothing.
                            await wait_process_gone(pid)
                            # Leave without a close handshake (trio-websocket's reader is
                            # stuck behind the pings nobody read).
                            vanish.cancel()
                    with trio.fail_after(10):
                        while not exec_ends(labd.running.data_dir):  # audited as it leaves
                            await trio.sleep(0.05)
                    (end,) = exec_ends(labd.running.data_dir)
                    assert end["result"] == "error"
                    assert end["details"]["reason"] == "ping timeout"
                    assert end["details"]["pid"] == pid
                    # The agent's session is untouched.
                    assert await agent.wait_connected() == session_id
                    assert agent.connections == 1

                    # A client that reads answers the pings and keeps its stream.
                    async with connect(labd.running.url, "/ws/exec", context) as ws:
                        session = StreamSession(ws)
                        await session.open(
                            "exec", {"targets": ["n1"], "start": {"argv": ["sleep", "3"]}}
                        )

                        async def sink(_: StreamState, channel: Channel, data: bytes) -> None:
                            pass

                        await session.run(sink)
                        (state,) = session.streams.values()
                        assert state.exit is not None and state.exit.code == 0
                        assert ws.closed is None or ws.closed.code == CloseCode.NORMAL
                finally:
                    shutdown.set()


async def test_a_client_that_did_not_ask_for_keepalive_gets_no_ping(tmp_path: Path) -> None:
    """Older labctl versions do not know ``ping``: labd pings only clients that said
    ``keepalive``, and never ends the others for silence."""
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path, **PING) as labd:
            admin = await labd.running.admin()
            settings = await enroll_state(labd.running, admin, "n1", tmp_path / "n1")
            shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
                await agent.wait_connected()
                context = labd.running.ssl_context(admin, alpn=["http/1.1"])
                try:
                    async with connect(labd.running.url, "/ws/exec", context) as ws:
                        # Quiet for longer than the ping timeout (1.5 s), never pinged.
                        params = {"targets": ["n1"], "start": {"argv": ["sleep", "2.5"]}}
                        request = Request(request_id="1", method="exec", params=params)
                        await ws.send_message(encode(request))
                        kinds: list[str] = []
                        while not kinds or kinds[-1] != "exec-exit":
                            kinds.append(decode(await ws.get_message()).TYPE)
                    assert kinds == ["response", "exec-started", "exec-exit"]
                finally:
                    shutdown.set()


def test_ping_is_a_message() -> None:
    assert decode(encode(Ping(nonce=3))) == Ping(nonce=3)
