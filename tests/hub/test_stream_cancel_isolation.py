"""Cancelling one stream never touches the agent's connection or its other streams.

Regression: the agent's exec tasks wrote to the shared WebSocket themselves, so a
``stream-cancel`` arriving while one of them was inside ``send_message`` cancelled a TLS
``send_all`` half-way. trio marks an ``SSLStream`` broken after any interrupted send: the
agent's connection died with 1006 and every other stream on it ended with ``agent
disconnected``. A real lab-agent process, so the agent writes while labd is busy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from lab.proto import DataFrame
from lab.proto.messages import ExecExit, ExecStart, ExecStarted
from tests.e2e.procs import clean_env
from tests.hub.hubtools import enroll_state, labd_with_hub, wait_process_gone

ROUNDS = 100


async def test_cancelled_streams_leave_the_session_and_a_bystander_alone(tmp_path: Path) -> None:
    state = tmp_path / "iso"
    with trio.fail_after(120):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            await enroll_state(labd.running, admin, "iso", state)
            agent = await trio.lowlevel.open_process(
                [sys.executable, "-m", "lab.agent.main", "run"],
                env=clean_env(LAB_AGENT_STATE_DIR=str(state)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                first = await labd.hub.wait_online("iso")
                counter = "for i in $(seq 1 40); do echo $i; sleep 0.05; done"
                bystander = ExecStart(stream_id=1, argv=["sh", "-c", counter])
                async with labd.hub.agent_stream("iso", bystander) as long_stream:
                    for n in range(ROUNDS):
                        start = ExecStart(stream_id=100 + n, argv=["seq", "1", "2000000"])
                        async with labd.hub.agent_stream("iso", start) as stream:
                            started = await stream.__anext__()
                            assert isinstance(started, ExecStarted)
                            # Keep the agent writing (grant credit as a relay does), then
                            # leave: stream-cancel reaches it in the middle of its output.
                            for _ in range(1 + n % 8):
                                frame = await stream.__anext__()
                                assert isinstance(frame, DataFrame)
                                await stream.consumed(len(frame.payload))
                        await wait_process_gone(started.pid)
                    out = b""
                    async for item in long_stream:
                        if isinstance(item, DataFrame):
                            out += item.payload
                            await long_stream.consumed(len(item.payload))
                        last = item
                assert isinstance(last, ExecExit) and last.code == 0, last
                assert out == b"".join(b"%d\n" % i for i in range(1, 41))
                now = labd.hub.session("iso")
                assert now is not None and now.session_id == first.session_id
            finally:
                agent.kill()
                await agent.wait()
