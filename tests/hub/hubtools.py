"""A real labd whose agent hub the test can reach, enrolled agent state dirs, raw agent sockets."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection

from lab.agent.daemon import AgentSettings, connect
from lab.agent.identity import enroll
from lab.labd.config import LabdConfig
from lab.labd.context import LabdContext
from lab.labd.hub.registry import AgentHub
from lab.labd.server import serve_labd
from lab.proto import decode, encode
from lab.proto.messages import Hello, Message
from tests.labd.harness import Credentials, RunningLabd


@attrs.define
class Labd:
    running: RunningLabd
    context: LabdContext

    @property
    def hub(self) -> AgentHub:
        return self.context.hub


@asynccontextmanager
async def labd_with_hub(tmp_path: Path, **settings: Any) -> AsyncIterator[Labd]:
    """labd on 127.0.0.1 (port 0 unless given) with its data in ``tmp_path/labd``."""
    known = attrs.fields_dict(LabdConfig)
    for key in ("enroll_rate", "rate_global", "rate_tokens"):
        if key in known:
            settings.setdefault(key, 0.0)
    settings.setdefault("port", 0)
    config = LabdConfig(host="127.0.0.1", data_dir=str(tmp_path / "labd"), **settings)
    shutdown = trio.Event()
    contexts: list[LabdContext] = []
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            partial(serve_labd, config, shutdown=shutdown, on_context=contexts.append)
        )
        try:
            yield Labd(
                RunningLabd(config=config, host=host, port=port, shutdown=shutdown), contexts[0]
            )
        finally:
            shutdown.set()


async def enroll_state(
    labd: RunningLabd, admin: Credentials, name: str, state_dir: Path, **settings: Any
) -> AgentSettings:
    """Enroll ``name`` the way `lab-agent enroll` does and return settings for its state dir."""
    token = await labd.create_token(admin, "agent")
    await enroll(
        labd.url,
        token,
        hostname=name,
        facts={"agent_version": "test"},
        ca_fingerprint=None,
        tofu=True,
        state_dir=state_dir,
    )
    settings.setdefault("renew", False)
    settings.setdefault("connect_timeout", 5.0)
    return AgentSettings(state_dir=state_dir, **settings)


def agent_creds(state_dir: Path, name: str) -> Credentials:
    return Credentials(
        key_pem=(state_dir / "key.pem").read_bytes(),
        cert_pem=(state_dir / "cert.pem").read_bytes(),
        subject=f"server/{name}",
    )


@asynccontextmanager
async def raw_agent(labd: RunningLabd, creds: Credentials) -> AsyncIterator[WebSocketConnection]:
    """A bare WebSocket to /ws/agent with ``creds``, for speaking the protocol by hand."""
    async with trio.open_nursery() as nursery:
        ws, stream = await connect_raw(nursery, labd, creds)
        try:
            yield ws
        finally:
            with trio.move_on_after(2):
                await ws.aclose()
            await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()


async def connect_raw(
    nursery: trio.Nursery, labd: RunningLabd, creds: Credentials
) -> tuple[WebSocketConnection, trio.SSLStream[trio.SocketStream]]:
    context = labd.ssl_context(creds, alpn=["http/1.1"])
    return await connect(nursery, labd.host, labd.port, context, connect_timeout=5)


async def say_hello(ws: WebSocketConnection) -> Message:
    await ws.send_message(encode(Hello(version="raw", facts={}, labels={})))
    return decode(await ws.get_message())


async def wait_process_gone(pid: int) -> None:
    """Wait (no polling) until ``pid`` has exited, using a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
