"""The bastion's ASGI app: quart-trio routes over :class:`lab.bastion.service.Bastion`.

Three kinds of callers, three kinds of credentials:

* firmware and iPXE (``/dispatch``, ``/wheelhouse/``, ``/healthz``): none, nothing secret;
* the installer (``/kickstart/*``, ``/api/discover``, ``/api/progress``): the discovery token or
  the machine's callback token, both embedded by the script that started it;
* operators, labd and Prometheus (``/api/machines``, ``/api/install``, ``/api/logs``,
  ``/metrics``, ...): :func:`authorize`, with an RBAC action per route (``provision:list``,
  ``provision:get``, ``provision:install``, ``provision:reprovision``, ``provision:forget``,
  ``provision:enrolled``, ``provision:logs``, ``provision:metrics``) on ``machine/<mac>`` or
  ``machine/*``.

:class:`Observed`, the outermost ASGI layer, gives every request an id (``X-Request-Id``, in
the response and in the log records) and observes its latency by route template and status.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import trio
from quart import Response, current_app, jsonify, request, send_from_directory
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from lab.bastion.fastpath import first_mac
from lab.bastion.operators import Operators
from lab.bastion.service import Bastion, public_view
from lab.bastion.validate import normalize_mac
from lab.errors import Invalid, LabError, NotFound, Unavailable
from lab.model import safejson
from lab.runtime.httpclose import close_after_error
from lab.runtime.logbuffer import Entry, LogBuffer
from lab.runtime.logs import REQUEST_ID_HEADER, begin_request
from lab.runtime.metrics import BastionMetrics, render

log = logging.getLogger("lab.bastion.http")

MAX_BODY = 256 * 1024
"""Largest accepted request body; an inventory of a big server is a few kB."""

_HTTP_CODES = {
    400: "invalid",
    401: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}

IPXE = "text/plain; charset=utf-8"

ROUTE_KEY = "lab.route"
"""ASGI scope key where the app leaves the route template of a request (for the metrics)."""

MAX_LOG_LINES = 10_000


def _error(status: int, code: str, message: str, details: dict[str, Any]) -> Response:
    resp = jsonify({"error": {"code": code, "message": message, "details": details}})
    resp.status_code = status
    return resp


def _bastion() -> Bastion:
    b: Bastion = current_app.extensions["bastion"]
    return b


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authorize(action: str, resource: str = "machine/*") -> str:
    """The operator behind this request if it may do ``action`` on ``resource``, else raise.

    See :mod:`lab.bastion.operators`: the admin token on a standalone bastion, a labd user
    certificate (RBAC decided by labd) on a joined one.
    """
    operators: Operators = current_app.extensions["operators"]
    return await operators.authorize(_peer_der(), _bearer(), action, resource)


def _peer_der() -> bytes | None:
    tls = request.scope.get("extensions", {}).get("tls") or {}
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) and der else None


def _machine(mac: str) -> str:
    """The RBAC resource of one machine (its MAC normalised; ``machine/*`` is every one)."""
    try:
        return f"machine/{normalize_mac(mac)}"
    except Invalid:
        return f"machine/{mac[:40]}"


async def _json_body() -> Any:
    """The request's JSON, decoded within size and nesting limits; lone surrogates refused."""
    return safejson.loads(await request.get_data(cache=False), max_bytes=MAX_BODY)


def _ipxe(script: str) -> Response:
    return Response(script, status=200, content_type=IPXE)


def _query(name: str) -> str:
    value = request.args.get(name)
    if value is None:
        raise Invalid(f"query parameter {name} is required", details={"fields": [name]})
    return value


async def _lab_error(exc: LabError) -> Response:
    return _error(exc.status, exc.code, exc.message, exc.details)


async def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    return _error(status, _HTTP_CODES.get(status, "http_error"), exc.description or "", {})


async def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return _error(500, "internal", "internal error", {})


def create_app(
    bastion: Bastion,
    *,
    admin_token: str,
    wheelhouse: Path,
    logs: LogBuffer | None = None,
    operators: Operators | None = None,
) -> QuartTrio:
    """The Quart app; ``logs`` backs ``/api/logs`` (503 without it), metrics are the bastion's.

    ``operators`` decides who may use the operator API (default: the admin token alone).
    """
    app = QuartTrio("lab-bastion")
    app.extensions["bastion"] = bastion
    app.extensions["operators"] = operators or Operators(admin_token)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    app.after_request(close_after_error)
    app.register_error_handler(LabError, _lab_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

    @app.after_request
    async def _route_template(response: Response) -> Response:
        # Read by Observed when the response starts: a template, never the raw path.
        if request.url_rule is not None:
            cast(dict[str, Any], request.scope)[ROUTE_KEY] = request.url_rule.rule
        return response

    @app.get("/metrics")
    async def metrics() -> Response:
        await authorize("provision:metrics")
        b = _bastion()
        # Counted at scrape time from the store, so the gauge cannot drift from the rows.
        b.metrics.set_machines(await b.count_states())
        body, content_type = render(b.metrics.registry)
        return Response(body, status=200, content_type=content_type)

    @app.get("/api/logs")
    async def read_logs() -> Response:
        await authorize("provision:logs")
        if logs is None:
            raise Unavailable("this bastion keeps no log buffer")
        follow = request.args.get("follow", "0") not in ("", "0", "false", "no")
        lines = _lines_arg(request.args.get("lines"))
        resp = Response(_log_lines(logs, lines, follow), content_type="application/x-ndjson")
        # A followed stream lasts until the client leaves or the bastion stops.
        resp.timeout = None
        return resp

    @app.get("/healthz")
    async def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/dispatch")
    async def dispatch() -> Response:
        return _ipxe(await _bastion().dispatch(_query("mac")))

    @app.get("/kickstart/discover.ks")
    async def discover_ks() -> Response:
        token = request.args.get("token") or _bearer()
        return _ipxe(await _bastion().discover_ks(_query("mac"), token))

    @app.get("/kickstart/install.ks")
    async def install_ks() -> Response:
        token = request.args.get("token") or _bearer()
        return _ipxe(await _bastion().install_ks(_query("mac"), token))

    @app.post("/api/discover")
    async def discover() -> Response:
        m = await _bastion().discover(await _json_body(), _bearer())
        return jsonify(public_view(m))

    @app.post("/api/progress")
    async def progress() -> Response:
        body = await _json_body()
        m = await _bastion().progress(body, _bearer())
        return jsonify({"mac": m.mac, "state": m.state.value, "phase": m.phase})

    @app.post("/api/enrolled")
    async def enrolled() -> Response:
        await authorize("provision:enrolled")
        return jsonify(public_view(await _bastion().enrolled(await _json_body())))

    @app.get("/api/machines")
    async def machines() -> Response:
        await authorize("provision:list")
        b = _bastion()
        after = request.args.get("wait_after")
        if after is not None:
            await _wait_changed(b, after)
        items = [public_view(m) for m in await b.machines.list()]
        return jsonify({"version": b.version, "items": items})

    @app.get("/api/machines/<mac>")
    async def machine(mac: str) -> Response:
        await authorize("provision:get", _machine(mac))
        return jsonify(public_view(await _bastion().get(mac)))

    @app.delete("/api/machines/<mac>")
    async def forget(mac: str) -> Response:
        await authorize("provision:forget", _machine(mac))
        await _bastion().forget(mac)
        return Response("", status=204)

    @app.post("/api/install")
    async def install() -> Response:
        req = await _json_body()
        await authorize("provision:install", _machine(_mac_of(req)))
        m = await _bastion().install(req)
        return jsonify(public_view(m))

    @app.post("/api/reprovision")
    async def reprovision() -> Response:
        req = await _json_body()
        await authorize("provision:reprovision", _machine(_mac_of(req)))
        return jsonify(await _bastion().reprovision(req))

    @app.get("/wheelhouse/")
    async def wheelhouse_index() -> Response:
        # pip --find-links reads the anchors of an HTML page.
        names = await trio.to_thread.run_sync(_listing, wheelhouse)
        links = "\n".join(
            f'<a href="{html.escape(n, quote=True)}">{html.escape(n)}</a><br>' for n in names
        )
        body = f"<!doctype html>\n<html><body>\n{links}\n</body></html>\n"
        return Response(body, content_type="text/html; charset=utf-8")

    @app.get("/wheelhouse/<name>")
    async def wheelhouse_file(name: str) -> Response:
        if name not in await trio.to_thread.run_sync(_listing, wheelhouse):
            raise NotFound(f"{name} is not in the wheelhouse")
        return await send_from_directory(wheelhouse, name)

    return app


def _mac_of(body: Any) -> str:
    """The ``mac`` of a request body, for its RBAC resource (validated by the handler)."""
    mac = body.get("mac") if isinstance(body, dict) else None
    return mac if isinstance(mac, str) else "*"


def _lines_arg(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        lines = int(raw)
    except ValueError:
        lines = -1
    if not 0 <= lines <= MAX_LOG_LINES:
        raise Invalid(f"lines must be 0..{MAX_LOG_LINES}", details={"fields": ["lines"]})
    return lines


async def _log_lines(logs: LogBuffer, lines: int | None, follow: bool) -> AsyncIterator[bytes]:
    """NDJSON: the last ``lines`` records, then (following) each new one until the end."""
    with logs.follow(lines) as (tail, follower):
        for entry in tail:
            yield _ndjson(entry)
        if not follow:
            return
        async for entry in follower:
            yield _ndjson(entry)


def _ndjson(entry: Entry) -> bytes:
    return (json.dumps(entry, default=str) + "\n").encode()


class Observed:
    """The outermost ASGI layer: a request id and a latency observation for every request.

    The id is the client's ``X-Request-Id`` when it is a sane token, else a new one; it is set
    for the task that handles the request (Quart's tasks inherit it), so every log record
    emitted meanwhile carries it, and it is returned in the response's ``X-Request-Id``.
    Latency is measured to the response start, labelled with the route template the app left
    in the scope (``<unmatched>`` when none matched).
    """

    def __init__(self, app: Any, metrics: BastionMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = begin_request(_header(scope, b"x-request-id"))
        header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())

        async def observed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
                self.metrics.observe_request(
                    scope.get(ROUTE_KEY, ""),
                    scope["method"],
                    message["status"],
                    time.perf_counter() - started,
                )
            await send(message)

        await self.app(scope, receive, observed_send)


def _header(scope: Any, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class DispatchFastPath:
    """The bastion's ASGI entry: answers ``GET /dispatch?mac=…`` itself, the rest through Quart.

    A boot storm is mostly ``/dispatch``, and there Quart's per-request machinery (request and
    app contexts, URL routing, a nursery of two tasks, a timeout scope, three send events) cost
    more than the answer. Only a request with a valid ``mac`` is answered here, through the same
    :meth:`Bastion.dispatch`; anything else (a missing or bad MAC, HEAD, another path) goes to
    the Quart app, which stays the one definition of the API and of its error responses. An
    error from the bastion itself is rendered by the app's own error handlers.
    :meth:`answer` is also what the connection front (:mod:`lab.bastion.fastpath`) answers.
    """

    def __init__(self, app: QuartTrio, bastion: Bastion) -> None:
        self.app = app
        self.bastion = bastion

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/dispatch":
            mac = first_mac(scope["query_string"])
            if mac is not None:
                scope[ROUTE_KEY] = "/dispatch"
                status, headers, body = await self.answer(mac)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
        await self.app(scope, receive, send)

    async def answer(self, mac: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body) of ``/dispatch`` for a valid ``mac``: the script, or the
        app's error envelope when the bastion fails."""
        try:
            body = (await self.bastion.dispatch(mac)).encode()
        except Exception as exc:
            return await self._error(exc)
        return 200, [_IPXE_TYPE, (b"content-length", str(len(body)).encode())], body

    async def _error(self, exc: Exception) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        async with self.app.app_context():
            resp = await (_lab_error(exc) if isinstance(exc, LabError) else _unexpected(exc))
            body = await resp.get_data(as_text=False)
        headers = [(k.lower().encode(), v.encode()) for k, v in resp.headers.items()]
        return resp.status_code, headers, body


_IPXE_TYPE = (b"content-type", IPXE.encode())


def _listing(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_file())


async def _wait_changed(b: Bastion, after: str) -> None:
    """Long-poll: hold the request up to 30 s until a machine changes after ``after``."""
    try:
        version = int(after)
    except ValueError:
        raise Invalid("wait_after must be an integer", details={"fields": ["wait_after"]}) from None
    with trio.move_on_after(30):
        await b.wait_changed(version)
