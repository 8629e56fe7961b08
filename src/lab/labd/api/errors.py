"""labd's error envelope: ``{"error": {"code", "message", "details"}}`` for every failure."""

from __future__ import annotations

import logging
from typing import Any

from attrs import frozen
from quart import Response, g, has_request_context, has_websocket_context, jsonify
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from lab.errors import LabError

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


@frozen
class ErrorAnswer:
    """The error a request (or a refused WebSocket handshake) was answered with, kept as a
    value for the audit hooks so they never read the JSON body back."""

    code: str
    message: str
    details: dict[str, Any]
    # The LabError the answer was made from; None for an HTTP error or an unexpected one.
    raised: LabError | None = None


def answered_error() -> ErrorAnswer | None:
    """The error this request was answered with (None: no error envelope was sent)."""
    answer: ErrorAnswer | None = g.get("lab_error")
    return answer


def error_response(
    status: int, code: str, message: str, details: dict[str, Any], raised: LabError | None = None
) -> Response:
    if has_request_context() or has_websocket_context():
        g.lab_error = ErrorAnswer(code, message, details, raised)
    resp = jsonify({"error": {"code": code, "message": message, "details": details}})
    resp.status_code = status
    return resp


async def _lab_error(exc: LabError) -> Response:
    resp = error_response(exc.status, exc.code, exc.message, exc.details, exc)
    retry_after = exc.details.get("retry_after")
    if exc.status == 429 and retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, round(float(retry_after))))
    return resp


async def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    return error_response(status, code, exc.description or exc.name, {})


async def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal", "internal error", {})


def register_error_handlers(app: QuartTrio) -> None:
    """Answer labd's errors, HTTP errors and anything unexpected with the envelope."""
    app.register_error_handler(LabError, _lab_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
