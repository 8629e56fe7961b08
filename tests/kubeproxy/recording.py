"""kmock's API double, made to satisfy kubectl, that remembers every request's headers.

kubectl needs three things kmock 0.8 gets wrong: the core group's ``APIResourceList`` says
``groupVersion: /v1`` (kubectl then finds no resource type at all), lists carry no
``kind``/``apiVersion``, and a watch answers ``application/octet-stream`` (kubectl has no
decoder for it).

``GET /_lab/requests`` (with the cluster's own credentials) answers them as JSON, so a test can
check what reached the API server through labd: the impersonation headers, and never a
client's own.
"""

from __future__ import annotations

from typing import Any

import aiohttp.web
import attrs
import kmock

from tests.kube.kmock_app import LabKubeAPI

_prepare = aiohttp.web.StreamResponse.prepare


async def _prepare_watch(self: aiohttp.web.StreamResponse, request: aiohttp.web.BaseRequest) -> Any:
    # This process serves only the double: a streamed answer is a watch, and a watch is JSON.
    if request.query.get("watch") in ("true", "1") and self.content_type in (
        "application/octet-stream",
        "",
    ):
        self.content_type = "application/json"
    return await _prepare(self, request)


aiohttp.web.StreamResponse.prepare = _prepare_watch  # type: ignore[method-assign]


@attrs.define(kw_only=True)
class KubectlKubeAPI(LabKubeAPI):
    """The double with what kubectl needs (see the module docstring)."""

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        answer = await super()._serve_version(request)
        if isinstance(answer, dict):
            answer["groupVersion"] = str(answer.get("groupVersion", "")).lstrip("/")
        return answer

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        answer = await super()._serve_list(request)
        resource = request.resource
        if isinstance(answer, dict) and resource is not None:
            info = self._resources.get(resource)
            kind = getattr(info, "kind", None) or str(resource.plural).capitalize()
            group = f"{resource.group}/" if resource.group else ""
            answer = {"apiVersion": f"{group}{resource.version}", "kind": f"{kind}List", **answer}
        return answer


@attrs.define(kw_only=True)
class RecordingKubeAPI(KubectlKubeAPI):
    """And every request remembered, for ``GET /_lab/requests``."""

    seen: list[dict[str, Any]] = attrs.field(factory=list)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path == "/_lab/requests":
            if not self.authenticated(raw_request) or "Impersonate-User" in raw_request.headers:
                return aiohttp.web.json_response({"error": "not for you"}, status=403)
            return aiohttp.web.json_response(self.seen)
        transport = raw_request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        self.seen.append(
            {
                "method": raw_request.method,
                "path": raw_request.path_qs,
                "headers": [[k, v] for k, v in raw_request.headers.items()],
                "client_cert": bool(peer),
            }
        )
        return await super().__call__(raw_request)
