"""A fast stand-in API server for bench/kubeproxy.py's GET rate: ``/version`` answers a
version (labd's import checks it), any other GET one fixed, empty PodList (keep-alive, TLS,
bearer token), so the rate measured is labd's, not kmock's.

Run: ``python bench/_static_api.py CERT KEY TOKEN``; prints ``PORT`` once listening, stops
when stdin closes.
"""

from __future__ import annotations

import json
import ssl
import sys

import h11
import trio

VERSION = json.dumps({"major": "1", "minor": "31", "gitVersion": "v1.31.4"}).encode()
BODY = json.dumps(
    {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}
).encode()


async def serve_one(stream: trio.SSLStream[trio.SocketStream], token: bytes) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                ok = dict(event.headers).get(b"authorization") == b"Bearer " + token
                path = event.target.split(b"?", 1)[0]
                status, body = (
                    (200, VERSION if path == b"/version" else BODY) if ok else (401, b"{}")
                )
                headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
                out = conn.send(h11.Response(status_code=status, headers=headers))
                out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
            else:
                return
    except (trio.BrokenResourceError, h11.ProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def main(cert: str, key: str, token: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    tls = [trio.SSLListener(listener, ctx, https_compatible=True) for listener in listeners]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, lambda s: serve_one(s, token.encode()), tls)
        stdin = trio.lowlevel.FdStream(0)
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
