"""A small async client for one Kubernetes API server (httpx under trio).

Failures are mapped at this seam to :mod:`lab.errors` leaves carrying the API's ``Status``
message: 400/422 :class:`Invalid`, 401/403 :class:`PermissionDenied` (the cluster refused the
stored credentials or the action), 404 :class:`NotFound`, 409 :class:`Conflict`; 429, 5xx and
transport failures :class:`Unavailable`. ``details`` holds the HTTP status and the Status
``reason``; never a credential.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from lab import pki
from lab.errors import Conflict, Invalid, LabError, NotFound, PermissionDenied, Unavailable
from lab.kube.config import KubeConnection

DEFAULT_TIMEOUT = 30.0

_BY_STATUS: dict[int, type[LabError]] = {
    400: Invalid,
    401: PermissionDenied,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: Invalid,
}


def ssl_context(conn: KubeConnection) -> ssl.SSLContext:
    """The TLS context for ``conn``: its CA (or the system's), its client certificate.

    Raises :class:`lab.errors.ConfigError` for unusable PEM material.
    """
    if conn.ca_pem and not conn.insecure_skip_verify:
        return pki.client_ssl_context(
            conn.ca_pem, cert_pem=conn.client_cert_pem, key_pem=conn.client_key_pem
        )
    ctx = ssl.create_default_context()
    if conn.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if conn.client_cert_pem and conn.client_key_pem:
        pki.load_cert_chain(ctx, conn.client_cert_pem, conn.client_key_pem)
    return ctx


def _verify_failed(exc: BaseException) -> bool:
    """Whether a TLS certificate check lies somewhere in ``exc``'s chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def error_from_response(status: int, body: Any, what: str) -> LabError:
    """The lab error for a failed API answer; ``body`` is the decoded JSON (a Status) or None."""
    message = ""
    reason = ""
    if isinstance(body, dict) and body.get("kind") == "Status":
        message = str(body.get("message") or "")
        reason = str(body.get("reason") or "")
    cls = _BY_STATUS.get(status, Unavailable)
    if status == 401:
        message = f"the cluster refused labd's credentials: {message or 'unauthorized'}"
    text = f"{what}: {message or f'HTTP {status}'}"
    return cls(text, details={"kube_status": status, "reason": reason})


class KubeClient:
    """Requests to one API server as one user; use as ``async with KubeClient(conn) as k``.

    Every method raises the :mod:`lab.errors` leaves described in the module docstring. On
    cancellation the request in flight is abandoned (its connection closed).
    """

    def __init__(self, conn: KubeConnection, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.connection = conn
        headers = {"Accept": "application/json", "User-Agent": "labctl"}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        self._http = httpx.AsyncClient(
            base_url=conn.server,
            verify=ssl_context(conn),
            headers=headers,
            timeout=timeout,
            follow_redirects=False,
        )

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; the response when its status is below 400."""
        what = f"{method.upper()} {path}"
        try:
            resp = await self._http.request(
                method.upper(),
                path,
                json=json,
                content=content,
                headers=dict(headers or {}),
                params=dict(params or {}),
            )
        except httpx.ConnectError as exc:
            if _verify_failed(exc):
                raise Unavailable(
                    f"{what}: the API server's certificate does not verify with the "
                    "kubeconfig's certificate-authority",
                    details={"server": self.connection.server},
                ) from exc
            raise Unavailable(
                f"{what}: cannot connect to {self.connection.server}",
                details={"server": self.connection.server},
            ) from exc
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"{what}: {exc.__class__.__name__} talking to {self.connection.server}",
                details={"server": self.connection.server},
            ) from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            raise error_from_response(resp.status_code, body, what)
        return resp

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON at ``path``."""
        resp = await self.request("GET", path, params=params)
        try:
            return resp.json()
        except ValueError as exc:
            raise Unavailable(f"GET {path}: the API server answered with no JSON") from exc

    async def version(self) -> dict[str, Any]:
        """``/version``: ``gitVersion``, ``major``, ``minor``, ``platform``..."""
        answer = await self.get("/version")
        if not isinstance(answer, dict) or not isinstance(answer.get("gitVersion"), str):
            raise Unavailable("GET /version: the answer is not a Kubernetes version")
        return answer
