"""labctl's sink may lag behind the connection: the stream ends (exit, labd closes) while
output is still queued for stdout, and everything is still written, without an error."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio

from lab.agent.daemon import run_agent
from lab.client.wsclient import StreamSession, StreamState, connect
from lab.proto import Channel
from tests.hub.hubtools import enroll_state, labd_with_hub

# ~2.7 MB: more than half the 4 MiB window (a credit is due), less than all of it.
LAST = 400_000


async def test_output_queued_past_the_end_is_written(tmp_path: Path) -> None:
    expected = "".join(f"{i}\n" for i in range(1, LAST + 1)).encode()
    with trio.fail_after(60):
        async with labd_with_hub(tmp_path) as labd:
            admin = await labd.running.admin()
            settings = await enroll_state(labd.running, admin, "n1", tmp_path / "n1")
            shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
                await agent.wait_connected()
                context = labd.running.ssl_context(admin, alpn=["http/1.1"])
                got = bytearray()
                ended = trio.Event()

                async def sink(state: StreamState, channel: Channel, data: bytes) -> None:
                    if not ended.is_set():
                        await ended.wait()  # stdout blocked until the connection is closed
                    got.extend(data)

                try:
                    async with connect(labd.running.url, "/ws/exec", context) as ws:
                        session = StreamSession(ws)
                        start = {"argv": ["seq", "1", str(LAST)]}
                        (state,) = await session.open("exec", {"targets": ["n1"], "start": start})

                        async def watch() -> None:
                            while ws.closed is None:
                                await trio.sleep(0.01)
                            ended.set()

                        nursery.start_soon(watch)
                        await session.run(sink)
                finally:
                    shutdown.set()
    assert state.exit is not None and state.exit.code == 0
    assert bytes(got) == expected
