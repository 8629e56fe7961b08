"""An API server that never answers, or answers garbage, must not hang labd or its clients.

The double here answers ``/version`` (so the cluster imports) and then, for every other
request, either never answers (``pods/silent``) or writes bytes that are no HTTP at all
(``pods/garbage``). labd gives up on an answer's head after ``HEAD_TIMEOUT`` (shortened here)
for ordinary requests and for upgrades (exec) alike, answers 503, and serves other clients the
whole time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import h11
import pytest
import trio

from lab.labd.kubeproxy import upstream
from tests.kubeproxy.rig import proxy_rig, raw_request
from tests.kubeproxy.test_streams import upgrade

BASE = "/k8s/bad/api/v1/namespaces/default/pods"
EXEC_HEADERS = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
]


async def _serve(stream: trio.SocketStream, parked: trio.MemorySendChannel[str]) -> None:
    conn = h11.Connection(h11.SERVER)
    target = ""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            target = event.target.decode()
            continue
        if not isinstance(event, h11.EndOfMessage):
            if isinstance(event, h11.Data):
                continue
            return
        if target.startswith("/version"):
            body = json.dumps({"major": "1", "minor": "31", "gitVersion": "v1.31.0"}).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            await stream.send_all(
                conn.send(h11.Response(status_code=200, headers=headers))
                + conn.send(h11.Data(data=body))
                + conn.send(h11.EndOfMessage())
            )
            conn.start_next_cycle()
            continue
        if "garbage" in target:
            await stream.send_all(b"\x16\x03\x01 this is no HTTP \xff\xfe\r\n\r\n" * 50)
            await stream.aclose()
            return
        await parked.send(target)  # and never answered
        await trio.sleep_forever()


@asynccontextmanager
async def bad_api_server() -> AsyncIterator[tuple[str, trio.MemoryReceiveChannel[str]]]:
    parked, waiting = trio.open_memory_channel[str](16)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, lambda s: _serve(s, parked), 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        kubeconfig = (
            "apiVersion: v1\nkind: Config\ncurrent-context: bad\n"
            f"clusters: [{{name: bad, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: bad, user: {token: t0ken}}]\n"
            "contexts: [{name: bad, context: {cluster: bad, user: bad}}]\n"
        )
        yield kubeconfig, waiting
        nursery.cancel_scope.cancel()


async def test_a_silent_or_garbled_api_server_gets_a_503_and_labd_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "HEAD_TIMEOUT", 2.0)
    with trio.fail_after(120):
        async with (
            bad_api_server() as (kubeconfig, parked),
            proxy_rig(tmp_path, {"bad": kubeconfig}) as rig,
        ):
            answers: dict[str, int] = {}

            async def ask(label: str, target: str) -> None:
                got = await raw_request(rig.labd, rig.admin, "GET", target)
                answers[label] = got.status

            async def exec_silent() -> None:
                stream, status, _, _ = await upgrade(
                    rig, rig.admin, "GET", BASE + "/silent/exec?command=sh", EXEC_HEADERS
                )
                await stream.aclose()
                answers["exec"] = status

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask, "silent", BASE + "/silent")
                    nursery.start_soon(ask, "garbage", BASE + "/garbage")
                    nursery.start_soon(exec_silent)
                    # labd answers others while both wait on the silent API server.
                    seen = {await parked.receive(), await parked.receive()}
                    assert all("/silent" in target for target in seen)
                    health = await raw_request(rig.labd, None, "GET", "/health/live")
                    assert health.status == 200
                    assert "silent" not in answers
            assert answers == {"silent": 503, "garbage": 503, "exec": 503}
