"""labd's health routes over a real socket, and the error envelope."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.labd.harness import running_labd


async def test_health_routes_over_a_real_socket(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with running_labd(tmp_path) as labd, labd.client() as client:
            for route in ("/healthz", "/health", "/health/live", "/health/ready"):
                resp = await client.get(route)
                assert resp.status_code == 200, route
                assert resp.json()["status"] == "ok"
            detailed = (await client.get("/health/detailed")).json()
            assert detailed["database"]["backend"] == "sqlite"
            assert detailed["database"]["schema_version"] >= 1
            assert detailed["database"]["latency_ms"] >= 0
            assert detailed["agents"] == {"connected": 0}
            missing = await client.get("/no/such/route")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "not_found"
            wrong_method = await client.delete("/healthz")
            assert wrong_method.status_code == 405
            assert set(wrong_method.json()["error"]) == {"code", "message", "details"}
    assert (tmp_path / "labd" / "labd.db").exists()
