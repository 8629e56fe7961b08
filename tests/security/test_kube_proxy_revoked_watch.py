"""A watch through /k8s can stay open for hours: a user whose certificate is revoked, or who is
disabled, while it is open must not keep receiving events."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.kubeproxy.rig import proxy_rig, raw_request
from tests.kubeproxy.streaming_upstream import streaming_upstream
from tests.kubeproxy.test_streams import read_until

WATCH = "/k8s/s/api/v1/namespaces/default/pods?watch=true"


@pytest.mark.parametrize(
    ("route", "body"),
    [("/api/certs/revoke", {"target": "user/ann"}), ("/api/users/ann/disable", None)],
    ids=["revoked", "disabled"],
)
async def test_revoking_or_disabling_ends_an_open_watch(
    tmp_path: Path, route: str, body: dict[str, str] | None
) -> None:
    with trio.fail_after(60):
        async with streaming_upstream() as up, proxy_rig(tmp_path, {"s": up}) as rig:
            ann = await rig.user("ann", "admin")
            ctx = rig.labd.ssl_context(ann, alpn=["http/1.1"])
            tcp = await trio.open_tcp_stream(rig.labd.host, rig.labd.port)
            stream = trio.SSLStream(tcp, ctx, server_hostname=rig.labd.host)
            async with stream:
                await stream.send_all(f"GET {WATCH} HTTP/1.1\r\nHost: labd\r\n\r\n".encode())
                head = await read_until(stream, b"", b"ADDED")
                assert head.startswith(b"HTTP/1.1 200")
                async with rig.labd.client(rig.admin) as http:
                    resp = await http.post(route, json=body or {})
                    assert resp.status_code == 200, resp.text
                # labd ends the answer: the client reads its end, then EOF or a close.
                rest = b""
                try:
                    while data := await stream.receive_some(65536):
                        rest += data
                except trio.BrokenResourceError:
                    pass
                assert b"ADDED" not in rest
            # labd closed its side toward the API server too.
            await up.wait_ended(1)
            watches = [e for e in await rig.audit(user="user/ann") if e["action"] == "kube:watch"]
            assert len(watches) == 1
            # Nor does a new request get through on a certificate or roles labd kept.
            again = await raw_request(rig.labd, ann, "GET", WATCH.split("?")[0])
            assert again.status in (401, 403), again.status
