"""A huge header or body sent to /k8s costs labd a bounded amount: the header is refused before
the proxy runs (labd's HTTP server caps a request head), the body streams through in small
chunks, and labd keeps answering other clients."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.kube.kmock_server import KubeAPI
from tests.kubeproxy.conftest import recording_api  # noqa: F401 - the fixture
from tests.kubeproxy.rig import proxy_rig, raw_request, upstream_requests

PODS = "/k8s/home/api/v1/namespaces/default/pods"


async def test_a_huge_header_is_refused_and_a_big_body_streams(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    with trio.fail_after(120):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            status = 0
            try:
                huge = await raw_request(
                    rig.labd, rig.admin, "GET", PODS, headers=[("X-Pad", "a" * 256 * 1024)]
                )
                status = huge.status
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                status = -1  # the connection was dropped: also a refusal
            assert status in (-1, 400, 413, 431), status
            paths = [r["path"] for r in await upstream_requests(recording_api.connection())]
            assert paths == []  # never forwarded
            body = b"{" + b" " * (8 * 1024 * 1024) + b"}"
            big = await raw_request(
                rig.labd,
                rig.admin,
                "POST",
                PODS,
                headers=[("Content-Type", "application/json")],
                body=body,
            )
            # Streamed through whole: the API server (kmock's 1 MiB limit) is who refuses it.
            assert (big.status, b"Maximum request body size" in big.body) == (413, True)
            ok = await raw_request(rig.labd, rig.admin, "GET", PODS)
            assert ok.status == 200
