"""Kubeconfigs that reach a cluster through labd's ``/k8s`` proxy (``labctl kubeconfig``).

The server is labd's ``/k8s/CLUSTER``, the CA is labd's, and the credentials are the files of
the user's own labd identity (named by path, never copied): a cluster's own credentials never
reach the operator's machine. Pure functions over plain mappings; the CLI reads and writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.errors import Invalid

_CLUSTER = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def check_cluster(name: str) -> str:
    """A cluster name as labd's /k8s path takes it (an RFC 1123 label); Invalid otherwise."""
    if not _CLUSTER.fullmatch(name):
        raise Invalid(
            f"{name!r} is not a cluster name (lowercase letters, digits and '-')",
            details={"fields": ["cluster"]},
        )
    return name


def context_name(cluster: str) -> str:
    return f"lab-{cluster}"


def proxy_kubeconfig(
    *,
    labd_url: str,
    cluster: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig with one cluster, user and context (all named ``lab-CLUSTER``)."""
    name = context_name(cluster)
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": f"{labd_url.rstrip('/')}/k8s/{cluster}",
                    "certificate-authority": str(ca_file),
                },
            }
        ],
        "users": [
            {
                "name": name,
                "user": {"client-certificate": str(cert_file), "client-key": str(key_file)},
            }
        ],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }


def merge_kubeconfig(existing: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """``existing`` with ``new``'s clusters, users and contexts added (same names replaced) and
    ``new``'s current context made current. Invalid when ``existing`` is not a kubeconfig."""
    merged: dict[str, Any] = dict(existing or {})
    merged.setdefault("apiVersion", "v1")
    merged.setdefault("kind", "Config")
    for section in ("clusters", "users", "contexts"):
        entries = merged.get(section) or []
        if not isinstance(entries, list):
            raise Invalid(f"kubeconfig: {section} is not a list", details={"fields": [section]})
        incoming = list(new.get(section) or [])
        names = {entry.get("name") for entry in incoming}
        kept = [e for e in entries if not (isinstance(e, dict) and e.get("name") in names)]
        merged[section] = kept + incoming
    merged["current-context"] = new.get("current-context")
    return merged
