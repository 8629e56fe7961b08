"""lab.runtime.tlsread: a read returns every whole TLS record already received, not one."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from lab import pki
from lab.runtime.tlsread import RecordReadingStream, receive_records

RECORD = 16 * 1024  # the TLS record's largest plaintext


@pytest.fixture(scope="module")
def contexts(ca: pki.CAMaterial) -> tuple[Any, Any]:
    key = pki.generate_key()
    cert, _ = pki.issue_server_cert(ca, pki.make_csr(key, "labd"))
    bundle = pki.ca_bundle_pem([ca])
    server = pki.server_ssl_context(cert, key, bundle, client_auth="optional")
    return server, pki.client_ssl_context(bundle)


async def tls_pair(
    contexts: tuple[Any, Any], *, close_notify: bool = False
) -> tuple[trio.SSLStream[Any], trio.SSLStream[Any]]:
    """(server, client) TLS over an in-memory stream pair: what one side sent is all in the
    other's buffer once send_all returned, so the test does not race the network. With
    ``close_notify`` the server's aclose sends one (labd's streams, https-compatible, do not)."""
    left, right = trio.testing.memory_stream_pair()
    server = trio.SSLStream(left, contexts[0], server_side=True, https_compatible=not close_notify)
    client = trio.SSLStream(right, contexts[1], server_hostname="localhost", https_compatible=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


async def test_one_read_returns_every_buffered_record(contexts: tuple[Any, Any]) -> None:
    with trio.fail_after(30):
        server, client = await tls_pair(contexts)
        sent = pattern(5 * RECORD + 100)  # six records
        await server.send_all(sent)
        got = await receive_records(client, 1 << 20)
    assert got == sent  # one call, where receive_some gives one record


async def test_receive_some_alone_gives_one_record(contexts: tuple[Any, Any]) -> None:
    # What receive_records is for: without it a read stops at the record's end.
    with trio.fail_after(30):
        server, client = await tls_pair(contexts)
        await server.send_all(pattern(5 * RECORD))
        got = await client.receive_some(1 << 20)
    assert len(got) == RECORD


async def test_a_read_stops_at_max_bytes(contexts: tuple[Any, Any]) -> None:
    with trio.fail_after(30):
        server, client = await tls_pair(contexts)
        sent = pattern(4 * RECORD)
        await server.send_all(sent)
        first = await receive_records(client, RECORD + 10)
        rest = await receive_records(client, 1 << 20)
    assert len(first) == RECORD + 10
    assert first + rest == sent


async def test_close_notify_after_data_is_eof_on_the_next_read(
    contexts: tuple[Any, Any],
) -> None:
    with trio.fail_after(30):
        server, client = await tls_pair(contexts, close_notify=True)
        sent = pattern(3 * RECORD)
        await server.send_all(sent)
        await server.aclose()  # close_notify behind the data
        got = await receive_records(client, 1 << 20)
        eof = await receive_records(client, 1 << 20)
    assert got == sent
    assert eof == b""


async def test_wrapped_stream_reads_whole_buffers_and_passes_the_rest_through(
    contexts: tuple[Any, Any],
) -> None:
    with trio.fail_after(30):
        server, client = await tls_pair(contexts)
        wrapped = RecordReadingStream(client)
        sent = pattern(3 * RECORD + 5)
        await server.send_all(sent)
        got = await wrapped.receive_some()
        await wrapped.send_all(b"back")
        back = await server.receive_some(100)
        await wrapped.aclose()
        closed = await server.receive_some(100)
    assert got == sent
    assert back == b"back"
    assert closed == b""  # aclose reached the wrapped stream
