"""Talking to Kubernetes clusters: kubeconfig parsing and an async API client (httpx on trio).

Used by labd (cluster registry, proxy, apps); see ``docs/clusters.md``.
"""

from lab.kube.client import KubeClient, error_from_response, ssl_context
from lab.kube.config import (
    KubeConnection,
    context_names,
    dump_kubeconfig,
    flatten_kubeconfig,
    load_kubeconfig,
)

__all__ = [
    "KubeClient",
    "KubeConnection",
    "context_names",
    "dump_kubeconfig",
    "error_from_response",
    "flatten_kubeconfig",
    "load_kubeconfig",
    "ssl_context",
]
