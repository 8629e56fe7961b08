"""The Kubernetes API the stand-in k3s serves: tests.kube's kmock double plus the two k3s
supervisor routes a joining node uses — ``/cacerts`` (the cluster CA, whose sha256 the join
token names) and a join route that checks the token's secret and, for a server, that its
critical flags match the first server's (k3s: "critical configuration value mismatch").
Joined nodes are kept in a file so a restarted first server still knows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs

from tests.kube.kmock_app import NODES, LabKubeAPI, node_object, status


@attrs.define(kw_only=True)
class K3sAPI(LabKubeAPI):
    ca_pem: bytes = b""
    secret: str = ""
    critical: dict[str, Any] = attrs.field(factory=dict)
    state: Path | None = None

    def load(self) -> None:
        if self.state is not None and self.state.exists():
            for name, version in json.loads(self.state.read_text()).items():
                self.put_node(name, version, save=False)

    def put_node(self, name: str, version: str, *, save: bool = True) -> None:
        self.objects[NODES, None, name] = node_object(name, version)
        if save and self.state is not None:
            known = json.loads(self.state.read_text()) if self.state.exists() else {}
            known[name] = version
            self.state.write_text(json.dumps(known))

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path == "/cacerts":
            return aiohttp.web.Response(body=self.ca_pem, content_type="text/plain")
        if raw_request.path == "/v1-k3s/join" and raw_request.method == "POST":
            data = await raw_request.json()
            if data.get("secret") != self.secret:
                return status(401, "Unauthorized", "Node password rejected: token mismatch")
            if data.get("role") == "server" and data.get("critical") != self.critical:
                return status(
                    400, "BadRequest", "critical configuration value mismatch between servers"
                )
            self.put_node(data["node"], data["version"])
            return aiohttp.web.json_response({"joined": data["node"]})
        return await super().__call__(raw_request)
