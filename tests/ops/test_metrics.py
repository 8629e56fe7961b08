"""labd's /metrics: needs a certificate with metrics:read, and counts the requests it saw."""

from __future__ import annotations

from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from lab.runtime.metrics import BastionMetrics, LabdMetrics, render
from tests.labd.harness import running_labd


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def test_scrape_counts_requests_and_needs_a_certificate(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client() as anonymous:
                resp = await anonymous.get("/metrics")
                assert resp.status_code == 401, resp.text
                assert resp.json()["error"]["code"] == "unauthenticated"
                for _ in range(3):
                    assert (await anonymous.get("/healthz")).status_code == 200
                assert (await anonymous.get("/no/such/route")).status_code == 404

            async with labd.client(admin) as http:
                resp = await http.get("/metrics")
                assert resp.status_code == 200, resp.text
                assert resp.headers["content-type"].startswith("text/plain")
                text = resp.text

    count = "labd_http_request_duration_seconds_count"
    assert value(text, count, route="/healthz", method="GET", status="200") == 3
    assert value(text, count, route="/metrics", method="GET", status="401") == 1
    assert value(text, count, route="<unmatched>", method="GET", status="404") == 1
    # The admin's own enrollment, counted by the same hook.
    assert value(text, "labd_enrollments_total", kind="user", result="success") == 1
    assert value(text, count, route="/api/auth/user-enroll", method="POST", status="201") == 1
    assert value(text, "labd_agents_connected") == 0
    assert ("process_cpu_seconds_total", frozenset()) in samples(text)


async def test_two_labds_in_one_process_keep_separate_registries(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path / "a") as a, running_labd(tmp_path / "b") as b:
            admin_a = await a.admin()
            admin_b = await b.admin()
            async with a.client() as http:
                assert (await http.get("/healthz")).status_code == 200
            async with a.client(admin_a) as http:
                text_a = (await http.get("/metrics")).text
            async with b.client(admin_b) as http:
                text_b = (await http.get("/metrics")).text
    count = "labd_http_request_duration_seconds_count"
    assert value(text_a, count, route="/healthz", method="GET", status="200") == 1
    assert value(text_b, count, route="/healthz", method="GET", status="200") == 0


def test_helpers_for_other_components() -> None:
    labd = LabdMetrics()
    with labd.track_exec():
        assert value(render(labd.registry)[0].decode(), "labd_exec_sessions_active") == 1
    with labd.audit_commit():
        assert value(render(labd.registry)[0].decode(), "labd_audit_queue_depth") == 1
    text = render(labd.registry)[0].decode()
    assert value(text, "labd_exec_sessions_total") == 1
    assert value(text, "labd_exec_sessions_active") == 0
    assert value(text, "labd_audit_queue_depth") == 0
    assert value(text, "labd_audit_commit_duration_seconds_count") == 1

    bastion = BastionMetrics()
    bastion.set_machines({"installed": 2, "discovered": 1})
    bastion.pxe_dispatches.labels("install").inc()
    bastion.dnsmasq_restarts.inc()
    text = render(bastion.registry)[0].decode()
    assert value(text, "lab_bastion_machines", state="installed") == 2
    assert value(text, "lab_bastion_machines", state="queued") == 0
    assert value(text, "lab_bastion_pxe_dispatches_total", outcome="install") == 1
    assert value(text, "lab_bastion_dnsmasq_restarts_total") == 1
