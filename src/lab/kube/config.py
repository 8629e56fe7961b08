"""Kubeconfig files: one context parsed into a :class:`KubeConnection`, and back.

A kubeconfig names clusters (API server, CA), users (token or client certificate) and contexts
(a cluster, a user, a namespace). labd keeps one context per cluster, flattened: every file
reference read and inlined by :func:`flatten_kubeconfig` on the operator's machine, because the
files it names exist only there. Bad input raises :class:`Invalid` whose ``details["fields"]``
names the kubeconfig path that is wrong (``users[admin].user.client-key-data``).

Not supported (refused by name, never half-used): ``exec`` and ``auth-provider`` plugins and
basic auth, which would run programs or send a password from labd.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from attrs import frozen

from lab.errors import Invalid

_UNSUPPORTED_AUTH = ("exec", "auth-provider", "username", "password")


@frozen(kw_only=True)
class KubeConnection:
    """Everything needed to reach one API server as one user (PEM bytes, token text)."""

    server: str
    ca_pem: bytes | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None
    insecure_skip_verify: bool = False
    namespace: str = "default"

    def __repr__(self) -> str:
        # Never print credentials, even in a traceback or a debug log.
        auth = "token" if self.token else "client-cert" if self.client_cert_pem else "none"
        return f"KubeConnection(server={self.server!r}, auth={auth}, namespace={self.namespace!r})"

    __str__ = __repr__


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"kubeconfig: {field}: {message}", details={"fields": [field]})


def _parse_yaml(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _invalid("kubeconfig", f"not YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise _invalid("kubeconfig", "not a mapping")
    return data


def _named(data: Mapping[str, Any], section: str, name: str, key: str) -> dict[str, Any]:
    """The ``key`` mapping of the entry called ``name`` in the list ``section``."""
    entries = data.get(section)
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise _invalid(section, "not a list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _invalid(f"{section}[{index}].name", "missing")
        if entry["name"] == name:
            body = entry.get(key)
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise _invalid(f"{section}[{name}].{key}", "not a mapping")
            return body
    raise _invalid(section, f"no entry named {name!r}")


def _context(data: Mapping[str, Any], context: str | None) -> tuple[str, dict[str, Any]]:
    name = context if context is not None else data.get("current-context")
    if not name or not isinstance(name, str):
        raise _invalid("current-context", "not set; name a context")
    return name, _named(data, "contexts", name, "context")


def _text(body: Mapping[str, Any], key: str, field: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(field, "not a string")
    return value


def _b64(body: Mapping[str, Any], key: str, field: str) -> bytes | None:
    value = _text(body, key, field)
    if value is None:
        return None
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _invalid(field, "not base64") from None


def _pem(data: bytes, field: str) -> bytes:
    if b"-----BEGIN " not in data:
        raise _invalid(field, "not a PEM document")
    return data


def _file_or_data(
    body: Mapping[str, Any], key: str, where: str, base_dir: Path | None
) -> bytes | None:
    """``KEY-data`` (base64) or ``KEY`` (a file, only when ``base_dir`` allows files)."""
    inline = _b64(body, f"{key}-data", f"{where}.{key}-data")
    path_text = _text(body, key, f"{where}.{key}")
    if inline is not None:
        return _pem(inline, f"{where}.{key}-data")
    if path_text is None:
        return None
    if base_dir is None:
        raise _invalid(f"{where}.{key}", "names a file; labd needs the data inline")
    path = base_dir / Path(path_text).expanduser()
    try:
        return _pem(path.read_bytes(), f"{where}.{key}")
    except OSError as exc:
        raise _invalid(f"{where}.{key}", f"cannot read {path}: {exc.strerror}") from None


def _token(body: Mapping[str, Any], where: str, base_dir: Path | None) -> str | None:
    token = _text(body, "token", f"{where}.token")
    token_file = _text(body, "tokenFile", f"{where}.tokenFile")
    if token is not None or token_file is None:
        return token
    if base_dir is None:
        raise _invalid(f"{where}.tokenFile", "names a file; labd needs the token inline")
    path = base_dir / Path(token_file).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise _invalid(f"{where}.tokenFile", f"cannot read {path}: {reason}") from None


def _connection(
    data: Mapping[str, Any], context: str | None, base_dir: Path | None
) -> tuple[str, KubeConnection]:
    name, ctx = _context(data, context)
    cluster_name = _text(ctx, "cluster", f"contexts[{name}].context.cluster")
    user_name = _text(ctx, "user", f"contexts[{name}].context.user")
    if cluster_name is None:
        raise _invalid(f"contexts[{name}].context.cluster", "missing")
    cluster = _named(data, "clusters", cluster_name, "cluster")
    where = f"clusters[{cluster_name}].cluster"
    server = _text(cluster, "server", f"{where}.server")
    if server is None or not server.startswith(("https://", "http://")):
        raise _invalid(f"{where}.server", "must be an http(s):// URL")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise _invalid(f"{where}.insecure-skip-tls-verify", "not a boolean")
    ca_pem = _file_or_data(cluster, "certificate-authority", where, base_dir)
    user: dict[str, Any] = {}
    user_where = "users"
    if user_name is not None:
        user = _named(data, "users", user_name, "user")
        user_where = f"users[{user_name}].user"
    for key in _UNSUPPORTED_AUTH:
        if user.get(key):
            raise _invalid(f"{user_where}.{key}", "not supported; use a token or a client cert")
    cert = _file_or_data(user, "client-certificate", user_where, base_dir)
    key_pem = _file_or_data(user, "client-key", user_where, base_dir)
    if (cert is None) != (key_pem is None):
        missing = "client-key" if key_pem is None else "client-certificate"
        raise _invalid(f"{user_where}.{missing}-data", "a client certificate needs its key")
    namespace = _text(ctx, "namespace", f"contexts[{name}].context.namespace") or "default"
    return name, KubeConnection(
        server=server.rstrip("/"),
        ca_pem=ca_pem,
        client_cert_pem=cert,
        client_key_pem=key_pem,
        token=_token(user, user_where, base_dir),
        insecure_skip_verify=insecure,
        namespace=namespace,
    )


def load_kubeconfig(
    text: str, context: str | None = None, *, base_dir: Path | None = None
) -> KubeConnection:
    """The connection of ``context`` (default: the file's ``current-context``).

    File references (``certificate-authority``, ``client-key``, ``tokenFile``...) are read
    relative to ``base_dir``; without one (labd) they are refused, since only inline data is
    portable. Raises :class:`Invalid` naming the kubeconfig field that is wrong.
    """
    return _connection(_parse_yaml(text), context, base_dir)[1]


def context_names(text: str) -> list[str]:
    """The contexts a kubeconfig defines, in file order."""
    entries = _parse_yaml(text).get("contexts") or []
    return [e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]


def dump_kubeconfig(conn: KubeConnection, name: str) -> str:
    """A self-contained kubeconfig (one cluster, user and context, all named ``name``)."""
    cluster: dict[str, Any] = {"server": conn.server}
    if conn.ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(conn.ca_pem).decode("ascii")
    if conn.insecure_skip_verify:
        cluster["insecure-skip-tls-verify"] = True
    user: dict[str, Any] = {}
    if conn.token:
        user["token"] = conn.token
    if conn.client_cert_pem and conn.client_key_pem:
        user["client-certificate-data"] = base64.b64encode(conn.client_cert_pem).decode("ascii")
        user["client-key-data"] = base64.b64encode(conn.client_key_pem).decode("ascii")
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": conn.namespace}}
        ],
        "current-context": name,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def flatten_kubeconfig(
    text: str, context: str | None = None, *, base_dir: Path, name: str | None = None
) -> str:
    """``context`` alone with its files inlined (``kubectl config view --minify --flatten``).

    The result is named ``name`` (default: the context's own name). Raises :class:`Invalid`.
    """
    ctx_name, conn = _connection(_parse_yaml(text), context, base_dir)
    return dump_kubeconfig(conn, name or ctx_name)
