"""labd's ASGI application: a quart-trio app with the error envelope and its routes."""

from __future__ import annotations

from typing import Any

from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest

from lab.labd.access.auth import authenticate
from lab.labd.access.ratelimit import Limits
from lab.labd.api import (
    agent_ws,
    apply,
    apps,
    artifacts,
    audit_routes,
    auth,
    bastion,
    certs,
    cluster_ops,
    clusters,
    exec_ws,
    health,
    metrics,
    power,
    replica_ws,
    roles,
    servers,
    tokens,
    users,
)
from lab.labd.api.errors import register_error_handlers
from lab.labd.audit.entries import audit_refused_handshake, audit_response
from lab.labd.context import LabdContext
from lab.labd.kubeproxy.proxy import KubeProxy, mount
from lab.runtime.httpclose import close_after_error
from lab.runtime.logs import REQUEST_ID_HEADER, begin_request, current_request_id

KUBE_PROXY = "lab.kubeproxy"
"""The app's :class:`KubeProxy`, in ``app.extensions``."""


async def _begin_request() -> None:
    """This request's id: the client's sane ``X-Request-Id`` or a new one (logs, audit)."""
    headers = request.headers if has_request_context() else websocket.headers
    begin_request(headers.get(REQUEST_ID_HEADER))


async def _send_request_id(response: Response) -> Response:
    rid = current_request_id()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
    return response


def _request_class(limits: dict[tuple[str, str], int]) -> type[TrioRequest]:
    """A request class whose body limit is raised for the routes in ``limits`` (method and
    path prefix), e.g. artifact uploads; every other body stays within MAX_CONTENT_LENGTH."""

    class LabdRequest(TrioRequest):
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any):
            for (verb, prefix), limit in limits.items():
                if method == verb and path.startswith(prefix):
                    kwargs["max_content_length"] = limit
            super().__init__(method, scheme, path, *args, **kwargs)

    return LabdRequest


def create_app(context: LabdContext) -> QuartTrio:
    # No static folder: every route must declare a policy, and labd serves no files.
    app = QuartTrio("labd", static_folder=None)
    app.request_class = _request_class(
        {("PUT", "/api/artifacts/"): context.config.artifacts_max_size}
    )
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
    for module in (agent_ws, metrics, bastion, replica_ws, power):
        app.register_blueprint(module.bp)
    app.register_blueprint(cluster_ops.bp)
    app.register_blueprint(clusters.bp)
    app.register_blueprint(apps.bp)
    app.register_blueprint(artifacts.bp)
    app.register_blueprint(apply.bp)
    # Access control, rate limits and the audit log, in one place for every route.
    app.extensions["lab.limits"] = Limits.per_minute(
        context.config.rate_global, context.config.rate_tokens
    )
    app.before_request(authenticate)
    app.before_websocket(authenticate)
    app.after_request(audit_response)
    app.after_websocket(audit_refused_handshake)
    register_error_handlers(app)
    # /k8s/CLUSTER/…: the Kubernetes API proxy, in front of quart (bodies and upgrades stream).
    proxy = KubeProxy(context)
    app.asgi_app = mount(app.asgi_app, proxy)  # type: ignore[method-assign,assignment]
    # HTTP/1.1 GETs of /k8s are answered before hypercorn (lab.labd.kubeproxy.front).
    app.extensions[KUBE_PROXY] = proxy
    return app
