"""labd's ASGI application: a quart-trio app with the error envelope and its routes."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, current_app, has_request_context, jsonify, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from lab.errors import LabError
from lab.labd.context import LabdContext
from lab.runtime.httpclose import close_after_error
from lab.runtime.logs import REQUEST_ID_HEADER, begin_request, current_request_id

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "invalid",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(status: int, code: str, message: str, details: dict[str, Any]) -> Response:
    resp = jsonify({"error": {"code": code, "message": message, "details": details}})
    resp.status_code = status
    return resp


async def _begin_request() -> None:
    """This request's id: the client's sane ``X-Request-Id`` or a new one (logs, audit)."""
    headers = request.headers if has_request_context() else websocket.headers
    begin_request(headers.get(REQUEST_ID_HEADER))


async def _send_request_id(response: Response) -> Response:
    rid = current_request_id()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
    return response


def ctx() -> LabdContext:
    """The LabdContext of the app serving the current request."""
    state: LabdContext = current_app.extensions["lab"]
    return state


def create_app(context: LabdContext) -> QuartTrio:
    from lab.labd.access.auth import authenticate
    from lab.labd.access.ratelimit import Limits
    from lab.labd.api import (
        agent_ws,
        audit_routes,
        auth,
        bastion,
        certs,
        exec_ws,
        health,
        metrics,
        replica_ws,
        roles,
        servers,
        tokens,
        users,
    )
    from lab.labd.audit.entries import audit_response

    # No static folder: every route must declare a policy, and labd serves no files.
    app = QuartTrio("labd", static_folder=None)
    app.extensions["lab"] = context
    # First of all hooks, so that every log record of the request (the access check's too)
    # carries its id.
    app.before_request(_begin_request)
    app.before_websocket(_begin_request)
    # Registered first so that it runs last: it sees the final status (after the audit hook).
    app.after_request(close_after_error)
    app.after_request(_send_request_id)
    # Bodies larger than this are refused with 413 before a handler reads them.
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    for module in (health, auth, tokens, certs, servers, exec_ws):
        app.register_blueprint(module.bp)
    for module in (users, roles, audit_routes):
        app.register_blueprint(module.bp)
    for module in (agent_ws, metrics, bastion, replica_ws):
        app.register_blueprint(module.bp)
    # Access control, rate limits and the audit log, in one place for every route.
    app.extensions["lab.limits"] = Limits.per_minute(
        context.config.rate_global, context.config.rate_tokens
    )
    app.before_request(authenticate)
    app.before_websocket(authenticate)
    app.after_request(audit_response)

    @app.errorhandler(LabError)
    async def _lab_error(exc: LabError) -> Response:
        resp = error_response(exc.status, exc.code, exc.message, exc.details)
        retry_after = exc.details.get("retry_after")
        if exc.status == 429 and retry_after is not None:
            resp.headers["Retry-After"] = str(max(1, round(float(retry_after))))
        return resp

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        return error_response(status, code, exc.description or exc.name, {})

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error", {})

    return app
