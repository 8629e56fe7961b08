"""Close the connection after an error answered to a request that sent a body.

An error answered before the body was read (413 from the size check, a refusal by the access
check) would otherwise leave the connection open with the body still in flight, and an idle
attacker-controlled keep-alive connection behind it. ``Connection: close`` tells the client and
makes hypercorn close the connection once the answer is sent.
"""

from __future__ import annotations

from quart import Response, has_request_context, request


def _sent_a_body() -> bool:
    if (request.content_length or 0) > 0:
        return True
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


async def close_after_error(response: Response) -> Response:
    """``after_request`` hook: ``Connection: close`` on 4xx/5xx answers to requests with a body
    (and on 400, which may come from a request that could not be parsed at all)."""
    if response.status_code < 400 or not has_request_context():
        return response
    if response.status_code in (400, 408, 411, 413, 414, 431) or _sent_a_body():
        response.headers["Connection"] = "close"
    return response
