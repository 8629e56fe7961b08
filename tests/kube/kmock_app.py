"""A Kubernetes API double for tests: kmock's ``KubernetesEmulator`` behind real TLS, as its own
process (``python -m tests.kube.kmock_app``; started by :mod:`tests.kube.kmock_server`).

What this adds to kmock (whose emulator answers anyone over plain HTTP):

- TLS with the server certificate given, and authentication like kube-apiserver's: a bearer
  token from ``--token`` or a client certificate that verifies against ``--client-ca``;
  anything else gets a 401 ``Status``;
- ``/version`` answers ``--git-version`` (kmock's is fixed at v1.26.4+k3s1);
- nodes (``--node NAME``) exist with a ``Ready`` condition, and the core resources are
  declared so that listing them works before any object exists.

``--handler module:Class`` runs a subclass of :class:`LabKubeAPI` instead (for tests that
need more behaviour). The process tells its parent it is ready through ``NOTIFY_SOCKET``
(``READY=1``, ``STATUS=https://127.0.0.1:PORT``) like labd, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import socket
import ssl
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock

NODES = kmock.resource("", "v1", "nodes")
CORE = {
    "nodes": kmock.ResourceInfo(kind="Node", namespaced=False, verbs={"get", "list", "patch"}),
    "namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
    "pods": kmock.ResourceInfo(kind="Pod", namespaced=True),
    "configmaps": kmock.ResourceInfo(kind="ConfigMap", namespaced=True),
    "secrets": kmock.ResourceInfo(kind="Secret", namespaced=True),
    "services": kmock.ResourceInfo(kind="Service", namespaced=True),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return aiohttp.web.json_response(body, status=code)


def node_object(name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": version},
        },
    }


@attrs.define(kw_only=True)
class LabKubeAPI(kmock.KubernetesEmulator):
    """The emulator with kube-apiserver's authentication and a configurable version."""

    tokens: frozenset[str] = frozenset()
    git_version: str = "v1.31.4+k3s1"

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for plural, info in CORE.items():
            info.verbs.update(VERBS)
            self.resources[kmock.resource("", "v1", plural)] = info

    def add_node(self, name: str) -> None:
        self.objects[NODES, None, name] = node_object(name, self.git_version)

    def authenticated(self, raw_request: aiohttp.web.BaseRequest) -> bool:
        header = raw_request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and header[len("Bearer ") :] in self.tokens:
            return True
        transport = raw_request.transport
        # A presented certificate was verified against --client-ca during the handshake.
        return bool(transport is not None and transport.get_extra_info("peercert"))

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if not self.authenticated(raw_request):
            return status(401, "Unauthorized", "Unauthorized")
        return await super().__call__(raw_request)

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        major, minor = self.git_version.lstrip("v").split(".")[:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.git_version,
            "gitTreeState": "clean",
            "platform": "linux/amd64",
        }


def _handler_class(spec: str | None) -> type[LabKubeAPI]:
    if not spec:
        return LabKubeAPI
    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name)
    # Run as ``-m tests.kube.kmock_app`` this module is __main__: a handler subclasses the
    # class of the importable module, not this copy.
    base = importlib.import_module("tests.kube.kmock_app").LabKubeAPI
    assert issubclass(cls, base), spec
    return cls  # type: ignore[no-any-return]


def _notify(text: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(text.encode(), path)


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    handler = _handler_class(args.handler)(tokens=frozenset(args.token), git_version=args.version)
    for name in args.node:
        handler.add_node(name)
    async with handler:
        server = aiohttp.test_utils.RawTestServer(handler, host=args.host, port=0)
        await server.start_server(ssl=_ssl_context(args))
        try:
            _notify(f"READY=1\nSTATUS=https://{args.host}:{server.port}")
            await stop.wait()
        finally:
            await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="kmock_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca")
    parser.add_argument("--token", action="append", default=[])
    parser.add_argument("--version", default="v1.31.4+k3s1")
    parser.add_argument("--node", action="append", default=[])
    parser.add_argument("--handler")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: a --handler subclass imports
    # tests.kube.kmock_app, whose LabKubeAPI must be the class _handler_class checks against.
    from tests.kube import kmock_app

    kmock_app.main()
