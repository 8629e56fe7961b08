"""Health routes (public): liveness, readiness and a detailed report."""

from __future__ import annotations

import time
from typing import Any

import trio
from quart import Blueprint

from lab import __version__
from lab.errors import LabError
from lab.labd.access.auth import public
from lab.labd.context import ctx

bp = Blueprint("health", __name__)

# A readiness probe must answer within the orchestrator's probe timeout: a database that does
# not answer a ping in this long makes the replica unready now, not after the pool's timeout.
READY_TIMEOUT = 2.0


@bp.get("/healthz")
@bp.get("/health")
@public
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@bp.get("/health/live")
@public
async def live() -> dict[str, Any]:
    return {"status": "ok"}


@bp.get("/health/ready")
@public
async def ready() -> tuple[dict[str, Any], int]:
    try:
        with trio.move_on_after(READY_TIMEOUT) as timer:
            await ctx().store.ping()
    except LabError as exc:
        return {"status": "unavailable", "reason": exc.message}, 503
    if timer.cancelled_caught:
        return {
            "status": "unavailable",
            "reason": f"no database answer in {READY_TIMEOUT:g} s",
        }, 503
    return {"status": "ok"}, 200


@bp.get("/health/detailed")
@public
async def detailed() -> tuple[dict[str, Any], int]:
    c = ctx()
    database: dict[str, Any] = {"backend": c.store.url.split(":", 1)[0]}
    status = 200
    try:
        database["latency_ms"] = round(await c.store.ping() * 1000, 3)
        database["schema_version"] = await c.store.schema_version()
        database["status"] = "ok"
    except LabError as exc:
        database["status"] = "unavailable"
        database["error"] = exc.message
        status = 503
    return {
        "status": "ok" if status == 200 else "degraded",
        "version": __version__,
        "uptime_s": round(time.monotonic() - c.started_monotonic, 3),
        "database": database,
        "agents": {"connected": c.connected_agents()},
    }, status
