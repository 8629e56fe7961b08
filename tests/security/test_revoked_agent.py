"""A revoked agent backs off to minutes, and its refusals are counted, not audited one by one
(91 audit rows in 25 minutes before)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected

from lab.agent.daemon import run_agent
from lab.proto.session import State
from tests.hub.hubtools import agent_creds, connect_raw, enroll_state, labd_with_hub
from tests.labd.harness import Credentials, RunningLabd


def refusals(text: str, reason: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "labd_auth_refusals_total" and sample.labels == {"reason": reason}:
                return float(sample.value)
    return 0.0


async def refused_status(labd: RunningLabd, creds: Credentials) -> int:
    with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True) as rejected:
        async with trio.open_nursery() as dialer:
            await connect_raw(dialer, labd, creds)
    refusal = rejected.value.exceptions[0]
    assert isinstance(refusal, ConnectionRejected)
    return int(refusal.status_code)


async def test_a_revoked_agent_is_counted_and_audited_once(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with labd_with_hub(tmp_path) as labd:
            running = labd.running
            admin = await running.admin()
            await enroll_state(running, admin, "web1", tmp_path / "a1")
            creds = agent_creds(tmp_path / "a1", "web1")
            async with running.client(admin) as http:
                resp = await http.post("/api/certs/revoke", json={"target": "server/web1"})
                assert resp.status_code == 200, resp.text
            for _ in range(6):
                assert await refused_status(running, creds) == 401
            async with running.client(admin) as http:
                metrics = (await http.get("/metrics")).text
                audit = (await http.get("/api/audit", params={"user": "server/web1"})).json()
            assert refusals(metrics, "revoked") == 6
            denied = [
                e
                for e in audit["items"]
                if e["result"] == "denied" and e["details"].get("reason") == "revoked"
            ]
            assert len(denied) == 1, denied
            assert denied[0]["details"]["path"] == "/ws/agent"


async def test_a_revoked_agent_waits_minutes_before_retrying(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with labd_with_hub(tmp_path) as labd, trio.open_nursery() as nursery:
            running = labd.running
            admin = await running.admin()
            settings = await enroll_state(running, admin, "web1", tmp_path / "a1")
            async with running.client(admin) as http:
                resp = await http.post("/api/certs/revoke", json={"target": "server/web1"})
                assert resp.status_code == 200, resp.text
            shutdown = trio.Event()
            agent = await nursery.start(partial(run_agent, settings, shutdown=shutdown))
            await agent.wait_state(State.RECONNECTING)
            assert agent.session is not None
            deadline = agent.session.next_deadline()
            assert deadline is not None
            wait = deadline - trio.current_time()
            assert 290 <= wait <= 600, wait  # minutes (5 to 10), not the usual 1-30 s
            assert agent.connections == 0
            shutdown.set()
