"""labd's REST API from labctl and lab-agent: httpx under trio, mTLS, errors mapped at the seam.

:class:`LabClient` speaks JSON to labd and turns every failure into a :mod:`lab.errors` class:
the error envelope ``{"error": {"code", "message", "details"}}`` by HTTP status, and transport
failures into :class:`Unavailable` (network) or :class:`Unauthenticated` (TLS trust).

Trust on first use: :func:`trust_on_first_use` reads labd's CA bundle over TLS **without**
verifying it, and :func:`establish_trust` accepts the first CA of that bundle only if its
fingerprint matches one the user vouched for (flag, prompt or explicit insecure opt-in). Only
that one certificate is trusted for the enrollment request; the full bundle is stored from the
enrollment answer, which arrives over the verified connection. Trusting the whole unverified
bundle would let a man in the middle append his own CA behind the genuine one.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from attrs import frozen

from lab.client.contexts import identity_dir
from lab.client.credentials import LOGIN_HINT as LOGIN_HINT  # re-exported: callers import it here
from lab.client.credentials import (
    Credentials,
    load_credentials,
    save_certificate,
    save_credentials,
)
from lab.client.settings import load_settings
from lab.client.wserrors import os_reason
from lab.errors import (
    Conflict,
    Invalid,
    LabError,
    NotFound,
    PermissionDenied,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

# lab.pki (cryptography) is imported inside the functions that need it, so that importing this
# module for a constant (LOGIN_HINT) or a type stays cheap for labctl's start-up.
if TYPE_CHECKING:
    from lab.pki import CertInfo

DOCTOR_HINT = "is labd running? labctl doctor"

_BY_STATUS: dict[int, type[LabError]] = {
    400: Invalid,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    503: Unavailable,
}

_HEX64 = re.compile(r"[0-9a-f]{64}")


def error_from_response(response: httpx.Response) -> LabError:
    """The :class:`LabError` for a non-2xx answer, keeping labd's message and details.

    400 Invalid, 401 Unauthenticated, 403 PermissionDenied, 404 NotFound, 409 Conflict,
    413 TooLarge, 429 RateLimited (``retry_after`` from the header, else the details),
    503 Unavailable; any other status is a plain :class:`LabError`. A body that is not the
    envelope still gives a readable message.
    """
    status = response.status_code
    message = f"labd answered {status} {response.reason_phrase}".rstrip()
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"]
        if isinstance(error.get("details"), dict):
            details = dict(error["details"])
    if status == 429:
        return RateLimited(message, retry_after=_retry_after(response, details), details=details)
    cls = _BY_STATUS.get(status, LabError)
    return cls(message, details=details)


def _retry_after(response: httpx.Response, details: dict[str, Any]) -> float:
    for raw in (response.headers.get("Retry-After"), details.get("retry_after")):
        try:
            return max(0.0, float(raw))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return 1.0


E = TypeVar("E", bound=BaseException)


def _in_chain(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` in ``exc``'s chain of causes (httpx and httpcore wrap the socket's
    and TLS's errors in their own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def error_from_transport(exc: httpx.TransportError, server: str) -> LabError:
    """The :class:`LabError` for a request that got no HTTP answer."""
    tls = _in_chain(exc, ssl.SSLError)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return Unauthenticated(
            f"labd at {server} presented a certificate our CA bundle does not trust "
            f"({tls.verify_message or tls.reason})",
            details={
                "reason": "server_not_trusted",
                "hint": "check the server URL, or log in again to refresh ca.pem",
            },
        )
    if tls is not None:
        return Unauthenticated(
            f"TLS handshake with labd at {server} failed ({tls.reason or tls})",
            details={
                "reason": "tls_handshake",
                "hint": "your certificate may be expired or from a retired CA; "
                "run `labctl login` again",
            },
        )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return Invalid(
            f"server URL {server!r} is not an http(s) URL",
            details={"fields": ["server"], "hint": "labctl config set server https://HOST:3100"},
        )
    os_error = _in_chain(exc, OSError)  # the connect's, below httpx's and httpcore's ConnectError
    if isinstance(exc, httpx.TimeoutException):
        what = "timed out"
    elif os_error is not None:
        what = os_reason(os_error)
    else:
        what = str(exc) or type(exc).__name__
    return Unavailable(f"cannot reach labd at {server}: {what}", details={"hint": DOCTOR_HINT})


def insecure_ssl_context() -> ssl.SSLContext:
    """A client context that verifies nothing: only for reading the CA bundle before trust."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def normalise_server(url: str) -> str:
    """``url`` without trailing slashes; raises :class:`Invalid` unless it is https://HOST."""
    server = url.strip().rstrip("/")
    parsed = httpx.URL(server) if "://" in server else None
    if parsed is None or parsed.scheme != "https" or not parsed.host:
        raise Invalid(
            f"server URL {url!r} must be https://HOST[:PORT]",
            details={"fields": ["server"], "reason": "not_https"},
        )
    return server


def normalise_fingerprint(text: str) -> str:
    """``SHA256:<64 lowercase hex>`` from any common spelling (case, colons); else Invalid."""
    value = text.strip().lower()
    value = value.removeprefix("sha256:").replace(":", "")
    if not _HEX64.fullmatch(value):
        raise Invalid(
            f"CA fingerprint {text!r} is not SHA256:<64 hex digits>",
            details={"fields": ["ca_fingerprint"], "reason": "bad_fingerprint"},
        )
    return "SHA256:" + value


class LabClient:
    """One HTTP/1.1-or-h2 connection pool to labd; use as ``async with LabClient(...) as c``.

    ``ssl_context`` carries the trust (our CA bundle) and, for authenticated calls, the client
    certificate (build it with :func:`lab.pki.client_ssl_context`; httpx 0.28 ignores client
    certificates given any other way). ``transport`` replaces the network (tests).
    Every request is bounded by ``timeout`` seconds; on cancellation the request is abandoned
    and its connection closed.
    """

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        auth_hint: str = LOGIN_HINT,
    ) -> None:
        self.server = server.rstrip("/")
        self.auth_hint = auth_hint
        self._http = httpx.AsyncClient(
            base_url=self.server,
            verify=ssl_context if ssl_context is not None else True,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(
        cls,
        *,
        directory: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | None = None,
    ) -> LabClient:
        """A client for the configured ``server`` with the identity stored by ``labctl login``;
        ``timeout`` replaces the ``timeout`` setting (a request that waits on purpose).

        Raises :class:`Unauthenticated` when there is no identity, :class:`ConfigError` for
        unreadable settings or an unusable key.
        """
        settings = load_settings()
        ctx = load_identity(directory) if transport is None else None
        return cls(
            settings.server,
            ssl_context=ctx,
            timeout=timeout if timeout is not None else settings.timeout,
            transport=transport,
        )

    async def __aenter__(self) -> LabClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; return the 2xx response or raise the mapped :class:`LabError`."""
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.server) from exc
        if response.is_success:
            return response
        error = error_from_response(response)
        if isinstance(error, Unauthenticated) and "hint" not in error.details:
            error.details["hint"] = self.auth_hint
        raise error

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise Unavailable(
                f"labd answered {method} {path} with a body that is not JSON",
                details={"hint": "is the server URL really labd?"},
            ) from exc

    async def get(self, path: str, *, params: dict[str, str] | None = None) -> Any:
        return await self._json("GET", path, params=params)

    async def get_text(self, path: str) -> str:
        return (await self.request("GET", path)).text

    async def post(self, path: str, json: Any = None) -> Any:
        return await self._json("POST", path, json=json if json is not None else {})

    async def put(self, path: str, json: Any) -> Any:
        return await self._json("PUT", path, json=json)

    async def patch(self, path: str, json: Any) -> Any:
        return await self._json("PATCH", path, json=json)

    async def delete(self, path: str) -> Any:
        return await self._json("DELETE", path)

    async def put_stream(
        self,
        path: str,
        content: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """PUT a streamed body (an artifact); the JSON answer or the mapped error."""
        try:
            response = await self._http.request(
                "PUT", path, content=content, headers=dict(headers or {}), params=params
            )
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.server) from exc
        if not response.is_success:
            raise error_from_response(response)
        return response.json()

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """A streamed answer (its body not read yet) when its status is 2xx; otherwise the
        mapped error (the body is read for the error envelope). A transport failure, also
        one while the caller reads the body inside the block, raises :class:`Unavailable`."""
        try:
            async with self._http.stream(method, path, headers=dict(headers or {})) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.server) from exc


def load_identity(directory: Path | None = None) -> ssl.SSLContext:
    """The mTLS client context from ``ca.pem``, ``cert.pem`` and ``key.pem`` in ``directory``
    (default: the current context's, :func:`lab.client.contexts.identity_dir`).

    Raises :class:`Unauthenticated` (hint: log in) when a file is missing and
    :class:`ConfigError` when the key is readable by others or the material is unusable.
    """
    from lab import pki

    creds = load_credentials(directory or identity_dir(), hint=LOGIN_HINT)
    return pki.client_ssl_context(creds.ca_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)


async def trust_on_first_use(
    server_url: str, *, request_timeout: float = 10.0
) -> tuple[bytes, str]:
    """Fetch labd's CA bundle **without verifying TLS**; return it and its first CA's fingerprint.

    The bundle proves nothing by itself: compare the fingerprint with one obtained out of band
    before trusting it (see :func:`establish_trust`). Raises :class:`Unavailable` when labd
    cannot be reached and :class:`ConfigError` when the answer is not a CA bundle.
    """
    from lab import pki

    async with LabClient(
        server_url, ssl_context=insecure_ssl_context(), timeout=request_timeout
    ) as c:
        bundle = (await c.request("GET", "/api/ca")).content
    cas = pki.load_ca_bundle(bundle)
    if not cas:
        from lab.errors import ConfigError

        raise ConfigError(f"labd at {server_url} served an empty CA bundle")
    return bundle, cas[0].fingerprint()


@frozen(kw_only=True)
class TrustedCA:
    """The one CA certificate we decided to trust for enrollment."""

    pem: bytes
    fingerprint: str
    subject: str


Confirm = Callable[[str, str], bool]


async def establish_trust(
    server: str,
    *,
    ca_fingerprint: str | None,
    tofu: bool,
    confirm: Confirm | None = None,
    request_timeout: float = 10.0,
) -> TrustedCA:
    """Decide whether to trust labd's CA before sending it a secret.

    With ``ca_fingerprint`` the first CA of the bundle must have it. Without, ``tofu=True``
    accepts it blindly, else ``confirm(fingerprint, subject)`` (a prompt; called from the trio
    thread, so it blocks the loop while the user answers) decides. With neither, refuses.
    Raises :class:`Unauthenticated` (reason ``fingerprint_mismatch``, ``not_confirmed`` or
    ``untrusted``), :class:`Invalid` for a malformed fingerprint, :class:`Unavailable`.
    """
    from lab import pki

    expected = normalise_fingerprint(ca_fingerprint) if ca_fingerprint else None
    bundle, fingerprint = await trust_on_first_use(server, request_timeout=request_timeout)
    first = pki.load_ca_bundle(bundle)[0]
    if expected is not None:
        if expected != fingerprint:
            raise Unauthenticated(
                f"labd's CA fingerprint is {fingerprint}, expected {expected}: refusing to log in",
                details={
                    "reason": "fingerprint_mismatch",
                    "expected": expected,
                    "got": fingerprint,
                    "hint": "check the URL; someone may be intercepting the connection",
                },
            )
    elif not tofu:
        if confirm is None:
            raise Unauthenticated(
                f"labd's CA fingerprint {fingerprint} cannot be confirmed without a terminal",
                details={
                    "reason": "untrusted",
                    "got": fingerprint,
                    "hint": "pass --ca-fingerprint SHA256:... (labctl ca show on a trusted "
                    "machine), or --insecure-trust-on-first-use",
                },
            )
        if not confirm(fingerprint, first.subject):
            raise Unauthenticated(
                "CA not trusted: nothing was changed",
                details={"reason": "not_confirmed", "got": fingerprint},
            )
    return TrustedCA(pem=first.cert_pem(), fingerprint=fingerprint, subject=first.subject)


@frozen(kw_only=True)
class Enrollment:
    """What a successful :func:`enroll_identity` stored and labd said about it."""

    server: str
    """labd's URL as normalised (no trailing slash)."""
    ca_fingerprint: str
    """labd's CA fingerprint as labd states it, else the one we trusted."""
    cert: CertInfo
    body: dict[str, Any]
    """labd's whole answer, for the fields one kind of enrollment adds (user, server id...)."""


async def enroll_identity(
    server: str,
    token: str,
    *,
    route: str,
    subject: str,
    fields: Mapping[str, Any],
    directory: Path,
    ca_fingerprint: str | None,
    tofu: bool,
    confirm: Confirm | None = None,
    auth_hint: str,
    request_timeout: float = 30.0,
) -> Enrollment:
    """Trade ``token`` and a CSR for a certificate at ``route``; store it in ``directory``.

    The sequence every client identity starts with (``labctl login``, ``lab-agent enroll``,
    ``lab-bastion join``): normalise ``server``, decide whether to trust labd's CA (see
    :func:`establish_trust`), make a new P-256 key and a CSR for ``subject``, POST
    ``{"token", "csr", **fields}`` over TLS verified against that CA, then write ``key.pem``
    (0600), ``cert.pem`` and ``ca.pem`` (the bundle from the answer) into ``directory`` (0700).
    ``auth_hint`` is what to do when labd refuses the token. Nothing is written unless labd
    accepted the token and its answer holds a certificate that parses and a CA bundle, so a
    failed attempt leaves an earlier identity intact.

    Raises :class:`Unauthenticated` (CA not trusted, token refused), :class:`PermissionDenied`,
    :class:`Invalid` (URL, fingerprint, a field labd rejects), :class:`RateLimited`,
    :class:`Unavailable`. Cancellation abandons the request and writes nothing.
    """
    from lab import pki

    server = normalise_server(server)
    trusted = await establish_trust(
        server,
        ca_fingerprint=ca_fingerprint,
        tofu=tofu,
        confirm=confirm,
        request_timeout=request_timeout,
    )
    key_pem = pki.generate_key()
    csr = pki.make_csr(key_pem, subject).decode("ascii")
    async with LabClient(
        server,
        ssl_context=pki.client_ssl_context(trusted.pem),
        timeout=request_timeout,
        auth_hint=auth_hint,
    ) as client:
        body = await client.post(route, {"token": token, "csr": csr, **fields})
    cert_pem, ca_pem = pem_field(body, "certificate"), pem_field(body, "ca_bundle")
    pki.load_ca_bundle(ca_pem)
    info = pki.cert_info(cert_pem)
    save_credentials(directory, Credentials(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem))
    return Enrollment(
        server=server,
        ca_fingerprint=str(body.get("ca_fingerprint") or trusted.fingerprint),
        cert=info,
        body=body,
    )


async def renew_in_place(directory: Path, server: str, *, request_timeout: float = 30.0) -> str:
    """Renew the certificate stored in ``directory`` over mTLS with a CSR from the same key.

    POSTs ``/api/auth/renew`` with the current certificate and atomically replaces
    ``cert.pem`` and ``ca.pem``; returns the new certificate's ``not_after`` (ISO 8601).
    The key never changes, so a crash leaves a matching pair (old or new certificate).
    Raises :class:`Unauthenticated` (no identity, cert rejected), :class:`Unavailable`.
    """
    from lab import pki

    creds = load_credentials(directory, hint=LOGIN_HINT)
    info = pki.cert_info(creds.cert_pem)
    ctx = pki.client_ssl_context(creds.ca_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
    csr = pki.make_csr(creds.key_pem, info.subject).decode("ascii")
    async with LabClient(server, ssl_context=ctx, timeout=request_timeout) as client:
        body = await client.post("/api/auth/renew", {"csr": csr})
    cert_pem, ca_pem = pem_field(body, "certificate"), pem_field(body, "ca_bundle")
    pki.load_ca_bundle(ca_pem)
    new = pki.cert_info(cert_pem)
    save_certificate(directory, cert_pem, ca_pem)
    return new.not_after.isoformat()


def pem_field(body: Any, key: str) -> bytes:
    """The PEM string ``body[key]`` of a labd answer as bytes; Unavailable if it is missing."""
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or "-----BEGIN" not in value:
        raise Unavailable(f"labd's answer has no {key} PEM", details={"hint": DOCTOR_HINT})
    return value.encode("ascii")
