"""The agent's connection to labd: TCP, a finished TLS handshake, then the WebSocket on it.

Every failure to open it is a :class:`trio_websocket.HandshakeError` whose message says why,
so the agent's log names it (a refused connection, an untrusted labd, a hang-up during TLS).
"""

from __future__ import annotations

import ssl
from typing import Any, cast

import trio
from trio_websocket import (
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from lab.client.wserrors import os_reason
from lab.proto.frames import HEADER_SIZE, MAX_PAYLOAD
from lab.runtime.tlsread import BULK_READ, RecordReadingStream

WS_PATH = "/ws/agent"


async def connect(
    nursery: trio.Nursery,
    host: str,
    port: int,
    context: ssl.SSLContext,
    *,
    connect_timeout: float,
    resource: str = WS_PATH,
) -> tuple[WebSocketConnection, trio.SSLStream[trio.SocketStream]]:
    """Open TLS to labd and the WebSocket on it; the caller closes both.

    We own the TLS stream rather than using ``open_websocket``: trio-websocket 0.12 never
    closes the TCP connection of a client whose server closed the WebSocket first. The TLS
    handshake is finished here, before trio-websocket sees the stream: its reader task sends
    the upgrade request, and a TLS error there (labd's certificate not signed by our CA
    bundle, labd hanging up) was lost in that task, so the agent waited ``connect_timeout``
    out and logged a timeout. Raises :class:`HandshakeError` saying why
    (``ConnectionTimeout`` after ``connect_timeout``, ``ConnectionRejected`` when labd
    answers with an HTTP error).
    """
    stream = None
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=context, https_compatible=True
            )
            await stream.do_handshake()
            # Whole buffers per read rather than one TLS record (lab.runtime.tlsread);
            # trio-websocket only sends, receives and closes, though it names the stream types.
            ws = await wrap_client_stream(
                nursery,
                cast(Any, RecordReadingStream(stream)),
                host,
                resource,
                max_message_size=HEADER_SIZE + MAX_PAYLOAD,
                receive_buffer_size=BULK_READ,
            )
    except BaseException as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        if isinstance(exc, trio.TooSlowError):
            raise ConnectionTimeout(f"no answer within {connect_timeout:g} s") from None
        if isinstance(exc, OSError | trio.BrokenResourceError):
            raise HandshakeError(connect_failure(exc)) from exc
        raise
    return ws, stream


def connect_failure(exc: BaseException) -> str:
    """Why a connection failed with ``exc``, for the log (trio raises a TLS stream's errors,
    an SSLError or a reset, as BrokenResourceError from them)."""
    if not isinstance(exc, trio.BrokenResourceError):
        return _reason(exc)
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"labd's certificate is not trusted by our CA bundle ({cause.verify_message})"
    return f"TLS handshake failed ({_reason(cause) if cause else 'the connection was closed'})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return os_reason(exc)
    return str(exc) or repr(exc)
