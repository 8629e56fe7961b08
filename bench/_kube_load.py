"""Load process for bench/kubeproxy.py: GET one URL as fast as CONCURRENCY clients can.

Run: ``python bench/_kube_load.py URL CA CERT KEY SECONDS CONCURRENCY [TOKEN]``. Prints one
JSON line ``{"requests": N, "errors": E, "seconds": S, "statuses": {...}, "cpu_ms_per_request":
C}``. CERT and KEY may be ``-`` (then TOKEN is sent as a bearer token).

Each client is one kept-alive HTTP/1.1 TLS connection written and read by hand (a request
head, an answer framed by its Content-Length): the load process shares the machine's two
CPUs with labd and the stand-in API server, and a general-purpose client here cost more CPU
per request than the proxy it measures. An answer it cannot read (no Content-Length, a
malformed head, a closed connection) counts as an error and the client reconnects.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import trio

_STATUS = re.compile(rb"HTTP/1\.1 (\d{3})")
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection: *close", re.IGNORECASE)


class Unreadable(Exception):
    pass


async def one(stream: trio.SSLStream[trio.SocketStream], request: bytes, buf: bytearray) -> bytes:
    """Send ``request``, read its answer: the status (as bytes); ``buf`` keeps what follows."""
    await stream.send_all(request)
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = await stream.receive_some(65536)
        if not data:
            raise Unreadable("closed")
        buf += data
    head = bytes(buf[: end + 2])
    status, length = _STATUS.match(head), _LENGTH.search(head)
    if status is None or length is None or _CLOSE.search(head):
        raise Unreadable("head")
    total = end + 4 + int(length.group(1))
    while len(buf) < total:
        data = await stream.receive_some(65536)
        if not data:
            raise Unreadable("closed")
        buf += data
    del buf[:total]
    return status.group(1)


async def main(argv: list[str]) -> None:
    url, ca, cert, key, seconds, concurrency = argv[:6]
    token = argv[6] if len(argv) > 6 else None
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    if cert != "-":
        ctx.load_cert_chain(cert, key)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + float(seconds)
    started = time.monotonic()
    cpu = time.process_time()

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                tcp = await trio.open_tcp_stream(host, port)
                stream = trio.SSLStream(tcp, ctx, server_hostname=host, https_compatible=True)
                async with stream:
                    buf = bytearray()
                    while time.monotonic() < deadline:
                        statuses[(await one(stream, request, buf)).decode()] += 1
            except (Unreadable, OSError, trio.BrokenResourceError) as exc:
                statuses[type(exc).__name__] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(int(concurrency)):
            nursery.start_soon(worker)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    total = sum(statuses.values())
    errors = total - statuses.get("200", 0)
    print(
        json.dumps(
            {
                "requests": total,
                "errors": errors,
                "seconds": elapsed,
                "statuses": statuses,
                "cpu_ms_per_request": round(cpu * 1000 / max(1, total), 3),
            }
        )
    )


if __name__ == "__main__":
    assert Path(sys.argv[2]).is_file()
    trio.run(main, sys.argv[1:])
