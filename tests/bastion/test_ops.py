"""The bastion's operations surface: /metrics, /api/logs and request ids."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from lab.runtime.logbuffer import LogBuffer
from tests.bastion.conftest import INVENTORY, Running, start_bastion
from tests.ops.test_metrics import value

MAC = "52:54:00:12:34:56"


@pytest.fixture
async def bastion(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    # The log buffer keeps what the loggers emit; tests run with the root logger at WARNING.
    logger = logging.getLogger("lab")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async for running in start_bastion(nursery, tmp_path):
            yield running
    finally:
        logger.setLevel(level)


async def test_metrics_need_the_admin_token_and_count_dispatches(bastion: Running) -> None:
    with trio.fail_after(20):
        http = bastion.client
        assert (await http.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.get("/metrics", headers=wrong)).status_code == 401

        token = await bastion.discovery_token()  # one fast-path dispatch (discover)
        resp = await http.post(
            "/api/discover", json=INVENTORY, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 200, resp.text
        assert (await bastion.install(MAC)).status_code == 200
        await bastion.dispatch_token(MAC)  # install
        await bastion.dispatch_token("02:00:00:00:00:09")  # discover
        # A bad MAC is not answered by the fast path: Quart's route counts it as an error.
        assert (await http.get("/dispatch", params={"mac": "zz"})).status_code == 400

        resp = await http.get("/metrics", headers=bastion.admin)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.text

    dispatches = "lab_bastion_pxe_dispatches_total"
    assert value(text, dispatches, outcome="discover") == 2
    assert value(text, dispatches, outcome="install") == 1
    assert value(text, dispatches, outcome="error") == 1
    assert value(text, "lab_bastion_machines", state="installing") == 1
    assert value(text, "lab_bastion_machines", state="discovered") == 0
    count = "lab_bastion_http_request_duration_seconds_count"
    assert value(text, count, route="/dispatch", method="GET", status="200") == 3
    assert value(text, count, route="/dispatch", method="GET", status="400") == 1
    assert value(text, count, route="/metrics", method="GET", status="401") == 2
    assert value(text, count, route="/api/install", method="POST", status="200") == 1
    assert value(text, "lab_bastion_dnsmasq_restarts_total") == 0


async def test_request_ids_are_echoed_or_made_and_reach_the_log(bastion: Running) -> None:
    with trio.fail_after(20):
        http = bastion.client
        resp = await http.get("/dispatch", params={"mac": MAC}, headers={"X-Request-Id": "pxe-7"})
        assert resp.headers["x-request-id"] == "pxe-7"
        made = await http.get("/healthz", headers={"X-Request-Id": "no spaces allowed"})
        assert made.headers["x-request-id"] not in ("", "no spaces allowed")
        other = await http.get("/healthz")
        assert other.headers["x-request-id"] != made.headers["x-request-id"]

        resp = await http.get("/api/logs", params={"lines": 50}, headers=bastion.admin)
        assert resp.status_code == 200, resp.text
        entries = [json.loads(line) for line in resp.text.splitlines()]
    dispatch = [e for e in entries if e["message"].startswith(f"dispatch {MAC}")]
    assert dispatch and dispatch[-1]["request_id"] == "pxe-7"
    assert any(e["message"].startswith("lab-bastion ready") for e in entries)


async def test_logs_need_the_token_and_check_lines(bastion: Running) -> None:
    with trio.fail_after(20):
        http = bastion.client
        assert (await http.get("/api/logs")).status_code == 401
        resp = await http.get("/api/logs", params={"lines": "x"}, headers=bastion.admin)
        assert resp.status_code == 400
        assert resp.json()["error"]["details"]["fields"] == ["lines"]
        resp = await http.get("/api/logs", params={"lines": 0}, headers=bastion.admin)
        assert resp.status_code == 200 and resp.text == ""


async def test_follow_streams_new_records_until_the_bastion_stops(bastion: Running) -> None:
    with trio.fail_after(20):
        seen: list[dict[str, str]] = []
        params = {"follow": 1, "lines": 0}
        async with bastion.client.stream(
            "GET", "/api/logs", params=params, headers=bastion.admin
        ) as resp:
            assert resp.status_code == 200
            lines = resp.aiter_lines()
            # Each dispatch logs one line; the stream shows it once it is logged.
            for mac in ("02:00:00:00:00:01", "02:00:00:00:00:02"):
                await bastion.client.get("/dispatch", params={"mac": mac})
                while True:
                    entry = json.loads(await anext(lines))
                    seen.append(entry)
                    if entry["message"].startswith(f"dispatch {mac}"):
                        break
            bastion.shutdown.set()
            rest = [line async for line in lines]
    assert [e["logger"] for e in seen if e["message"].startswith("dispatch")] == [
        "lab.bastion",
        "lab.bastion",
    ]
    assert all("dispatch 02:00:00:00:00:0" not in line for line in rest)


async def test_a_slow_follower_drops_records_instead_of_queueing_them() -> None:
    buffer = LogBuffer(capacity=5, follower_queue=3)
    logger = logging.getLogger("lab.test.buffer")
    logger.propagate = False
    logger.addHandler(buffer)
    logger.setLevel(logging.INFO)
    try:
        with buffer.follow(lines=2) as (tail, follower):
            for i in range(10):
                logger.info("line %d", i)
            assert tail == []
            assert [e["message"] for e in buffer.tail()] == [f"line {i}" for i in range(5, 10)]
            assert follower.dropped == 7
            buffer.close()
            got = [e["message"] async for e in follower]
        assert got == [
            "7 log records dropped: this reader was too slow",
            "line 0",
            "line 1",
            "line 2",
        ]
        assert buffer.statistics()["followers"] == 0
    finally:
        logger.removeHandler(buffer)
        logger.propagate = True
