"""The headers that cross the proxy, both ways: pure.

Toward the API server every identity the client brought is removed — ``Authorization``,
``Proxy-Authorization``, every ``Impersonate-*`` (``-User``, ``-Group``, ``-Uid``,
``-Extra-*``) and the front-proxy ``X-Remote-*`` headers, whatever their case and however often
they are repeated — and labd's own are set: ``Impersonate-User: labd:USER``, one
``Impersonate-Group`` per group the user's roles map to, and the cluster's bearer token when
its kubeconfig has one (a client certificate goes in the TLS context instead). Hop-by-hop
headers are dropped both ways (RFC 9110 §7.6.1), except the ``Connection: Upgrade`` and
``Upgrade`` pair an upgrade needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Headers = list[tuple[bytes, bytes]]

USER_PREFIX = "labd:"
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
_IDENTITY = frozenset({b"authorization", b"proxy-authorization"})
_IDENTITY_PREFIXES = (b"impersonate-", b"x-remote-")


def impersonated_user(user: str) -> str:
    return f"{USER_PREFIX}{user}"


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.strip().lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def is_identity_header(name: bytes) -> bool:
    """Whether a client header claims an identity the proxy must never pass on."""
    lowered = name.strip().lower()
    return lowered in _IDENTITY or lowered.startswith(_IDENTITY_PREFIXES)


def upgrade_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The ``Upgrade`` value when the request asks for one (``Connection: upgrade``)."""
    listed = list(headers)
    if b"upgrade" not in _connection_tokens(listed):
        return None
    for name, value in listed:
        if name.strip().lower() == b"upgrade" and value.strip():
            return value.strip()
    return None


def upstream_request_headers(
    client: Iterable[tuple[bytes, bytes]],
    *,
    host: str,
    user: str,
    groups: Sequence[str],
    token: str | None = None,
    request_id: str | None = None,
) -> Headers:
    """The headers sent to the API server for a request that came with ``client``."""
    listed = list(client)
    named = _connection_tokens(listed)
    upgrade = upgrade_of(listed)
    out: Headers = [(b"host", host.encode("idna" if not host.isascii() else "ascii"))]
    for name, value in listed:
        lowered = name.strip().lower()
        if lowered in _HOP_BY_HOP or lowered in named or is_identity_header(lowered):
            continue
        if request_id is not None and lowered == b"x-request-id":
            continue
        out.append((lowered, value))
    if upgrade is not None:
        out += [(b"connection", b"Upgrade"), (b"upgrade", upgrade)]
    out.append((b"impersonate-user", impersonated_user(user).encode()))
    out += [(b"impersonate-group", group.encode()) for group in groups]
    if token:
        out.append((b"authorization", b"Bearer " + token.encode()))
    if request_id is not None:
        out.append((b"x-request-id", request_id.encode()))
    return out


def client_response_headers(upstream: Iterable[tuple[bytes, bytes]], *, upgraded: bool) -> Headers:
    """The API server's answer headers as the client gets them (hop-by-hop dropped, but the
    ``Connection``/``Upgrade`` pair of a 101)."""
    listed = list(upstream)
    named = _connection_tokens(listed)
    out: Headers = []
    for name, value in listed:
        lowered = name.strip().lower()
        if upgraded and lowered in (b"connection", b"upgrade"):
            out.append((lowered, value))
            continue
        if (
            lowered in _HOP_BY_HOP
            or lowered in named
            or (lowered == b"content-length" and upgraded)
        ):
            continue
        out.append((lowered, value))
    return out
