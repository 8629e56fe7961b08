"""``GET /metrics`` (Prometheus text format) and the request-latency hooks.

The scrape needs a client certificate like every non-public route: give Prometheus a user
whose role allows ``metrics:read`` on ``metrics/labd`` (admins have it). The hooks are
registered app-wide by this blueprint, so the latency of every HTTP request (including
refusals by the access check and the audit commit that precedes the answer) is observed
without touching the app factory's own hooks.
"""

from __future__ import annotations

import time

from quart import Blueprint, Response, g, request

from lab.labd.access.auth import requires
from lab.labd.context import ctx
from lab.runtime.metrics import render

bp = Blueprint("metrics", __name__)

# Enrollment routes and the kind of identity each one issues.
_ENROLL_KINDS = {"/api/auth/enroll": "agent", "/api/auth/user-enroll": "user"}


def _enroll_result(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    if status == 429:
        return "rate_limited"
    if status < 500:
        return "invalid"
    return "error"


@bp.before_app_request
async def _start_timer() -> None:
    g.lab_metrics_started = time.perf_counter()


@bp.after_app_request
async def _observe(response: Response) -> Response:
    started: float | None = g.get("lab_metrics_started")
    if started is None:
        return response
    metrics = ctx().metrics
    rule = request.url_rule.rule if request.url_rule is not None else ""
    status = response.status_code
    metrics.observe_request(rule, request.method, status, time.perf_counter() - started)
    kind = _ENROLL_KINDS.get(rule)
    if kind is not None and request.method == "POST":
        metrics.enrollments.labels(kind, _enroll_result(status)).inc()
    return response


@bp.get("/metrics")
@requires("user", action="metrics:read", resource="metrics/labd")
async def scrape() -> Response:
    context = ctx()
    # Read at scrape time from the hub itself, so the gauge cannot drift from the truth.
    context.metrics.agents_connected.set(context.connected_agents())
    body, content_type = render(context.metrics.registry)
    return Response(body, status=200, content_type=content_type)
