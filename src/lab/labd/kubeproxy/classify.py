"""What a request to ``/k8s/CLUSTER/…`` asks of the Kubernetes API: pure, no I/O.

:func:`classify` takes the method, the raw (still percent-encoded) path and the query string
and returns a :class:`KubeRequest`: the cluster, the normalized path that is forwarded, the
Kubernetes verb, API group, resource, namespace, name and subresource, and the RBAC action and
resource labd judges (``kube:VERB`` on ``cluster/C/namespace/NS/RESOURCE/OBJECT``).

The path is resolved before anything is judged, and what is judged is exactly what is
forwarded: each segment is percent-decoded once, a decoded segment holding ``/``, ``\\``, a NUL
or another control character is refused (an encoded slash cannot hide a segment boundary), and
``.``/``..`` segments are removed as RFC 3986 does, so ``/k8s/home/../prod/api/v1/pods`` is a
request to cluster ``prod``, judged and forwarded as such. The cluster is always the first
segment of the resolved path.
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from attrs import frozen

from lab.errors import Invalid

PREFIX = "k8s"

# The verbs that name a subresource rather than an HTTP method (RBAC action kube:exec, …).
STREAM_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
CONNECT_SUBRESOURCES = STREAM_SUBRESOURCES | {"proxy"}
# Paths that describe the API rather than act on it: counted, never audited one by one.
_DISCOVERY_ROOTS = frozenset({"api", "apis", "openapi", "version"})
# namespaces/NS/status and …/finalize are the namespace object's own subresources.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What stays unescaped when a decoded segment is encoded again for the upstream (RFC 3986
# pchar without the percent sign): the upstream sees one canonical spelling.
_SAFE = "-._~!$&'()*+,;=:@"


@frozen(kw_only=True)
class KubeRequest:
    cluster: str
    path: str
    """The resolved path below the cluster (``/api/v1/namespaces/x/pods``), as forwarded."""
    query: str
    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    discovery: bool = False
    """An API description (``/api``, ``/apis…``, ``/openapi…``, ``/version``)."""

    @cached_property
    def action(self) -> str:
        return f"kube:{self.verb}"

    @cached_property
    def rbac_resource(self) -> str:
        """``cluster/C/namespace/NS/RESOURCE/OBJECT[/SUB]``; without the namespace part for
        cluster-scoped objects and lists across namespaces; ``cluster/C/discovery`` for API
        descriptions; ``cluster/C/path/P…`` for other non-resource URLs (``/healthz``)."""
        base = f"cluster/{self.cluster}"
        if self.discovery:
            return f"{base}/discovery"
        if not self.resource:
            return f"{base}/path{self.path}"
        parts = [base]
        if self.namespace and self.resource != "namespaces":
            parts.append(f"namespace/{self.namespace}")
        parts.append(self.resource)
        if self.name:
            parts.append(self.name)
        if self.subresource and self.subresource not in CONNECT_SUBRESOURCES:
            parts.append(self.subresource)
        return "/".join(parts)

    @property
    def streaming(self) -> bool:
        """exec, attach or port-forward: a session with a start and an end entry."""
        return self.subresource in STREAM_SUBRESOURCES

    @property
    def upstream_target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")


def resolve_segments(raw_path: bytes) -> list[str]:
    """The decoded segments of ``raw_path``, none empty, dot segments removed; Invalid for a
    segment that decodes to a slash, a backslash, a control character or bytes not UTF-8."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise Invalid("the path must be ASCII (percent-encode the rest)", details=_path()) from None
    if not text.startswith("/"):
        raise Invalid("the path must start with /", details=_path())
    out: list[str] = []
    pieces = text[1:].split("/")
    for piece in pieces:
        try:
            segment = unquote_to_bytes(piece).decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("a path segment is not UTF-8", details=_path()) from None
        if "/" in segment or "\\" in segment or _CONTROL.search(segment):
            raise Invalid(
                "a path segment holds an encoded slash, backslash or control character",
                details=_path(),
            )
        if segment == "..":
            if out:
                out.pop()
        elif segment not in (".", ""):  # "//" is one separator, a trailing "/" none
            out.append(segment)
    return out


@lru_cache(maxsize=4096)
def classify(method: str, raw_path: bytes, query: bytes | str) -> KubeRequest:
    """Classify a request to labd's ``/k8s/CLUSTER/…``; Invalid (400) naming ``path``,
    ``method`` or ``query`` for what cannot be a Kubernetes API request.

    Pure, so the answers to the last requests are kept (a controller asks the same few
    things over and over); refusals are not kept."""
    segments = resolve_segments(raw_path)
    if len(segments) < 2 or segments[0] != PREFIX:
        raise Invalid("the path must be /k8s/CLUSTER/…", details=_path())
    cluster = segments[1]
    if not _CLUSTER_NAME.match(cluster):
        raise Invalid(f"{cluster!r} is not a cluster name", details=_path())
    query_text = query.decode("latin-1") if isinstance(query, bytes) else query
    if _CONTROL.search(query_text) or " " in query_text:
        raise Invalid("the query string holds a control character", details=_field("query"))
    rest = segments[2:]
    path = "/" + "/".join(quote(s, safe=_SAFE) for s in rest)
    method = method.upper()
    watch_param = _watch_param(query_text)
    common: dict[str, Any] = {"cluster": cluster, "path": path, "query": query_text}
    if not rest or rest[0] not in ("api", "apis"):
        discovery = bool(rest) and rest[0] in _DISCOVERY_ROOTS
        return KubeRequest(**common, verb=_plain_verb(method), discovery=discovery)
    if rest[0] == "api":
        group, tail = "", rest[1:]
    else:
        group, tail = (rest[1], rest[2:]) if len(rest) > 1 else ("", [])
    if len(tail) <= 1:  # /api, /api/v1, /apis, /apis/G, /apis/G/V
        return KubeRequest(
            **common,
            verb=_plain_verb(method),
            group=group,
            version=tail[0] if tail else "",
            discovery=True,
        )
    version, parts = tail[0], tail[1:]
    legacy_watch = parts[0] == "watch"
    if legacy_watch:
        parts = parts[1:]
        if not parts:
            raise Invalid("a watch path names a resource", details=_path())
    namespace = ""
    if parts[0] == "namespaces" and len(parts) >= 2:
        namespace = parts[1]
        if len(parts) >= 3 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else ""
    subresource = "/".join(parts[2:])
    # As the API server: ?watch turns a get without a name into a watch, never a named get.
    verb = _resource_verb(method, name=name, watch=legacy_watch or (watch_param and not name))
    base = subresource.split("/", 1)[0]
    if base in CONNECT_SUBRESOURCES:
        verb = base
        subresource = base
    if base == "proxy":
        name = _proxied_name(name)
    return KubeRequest(
        **common,
        verb=verb,
        group=group,
        version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


def _proxied_name(name: str) -> str:
    """The object a ``…/NAME/proxy`` reaches: ``[SCHEME:]NAME[:PORT]`` names ``NAME`` (so
    ``services/vault:8200/proxy`` is judged on Service ``vault``, as a rule naming it means)."""
    parts = name.split(":")
    if len(parts) == 3:
        return parts[1]
    return parts[0]


def _watch_param(query: str) -> bool:
    """``watch`` as the API server reads it: its first value, false only when ``0`` or
    ``false`` (any case), so ``?watch``, ``?watch=`` and ``?watch=yes`` are watches."""
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "watch"]
    return bool(values) and values[0].lower() not in ("0", "false")


def _plain_verb(method: str) -> str:
    verbs = {"GET": "get", "HEAD": "get", "OPTIONS": "get", "POST": "create", "PUT": "update"}
    verbs |= {"PATCH": "patch", "DELETE": "delete"}
    if method not in verbs:
        raise Invalid(f"method {method} is not part of the Kubernetes API", details=_method())
    return verbs[method]


def _resource_verb(method: str, *, name: str, watch: bool) -> str:
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    raise Invalid(f"method {method} is not part of the Kubernetes API", details=_method())


def _path() -> dict[str, object]:
    return _field("path")


def _method() -> dict[str, object]:
    return _field("method")


def _field(name: str) -> dict[str, object]:
    return {"fields": [name]}
