"""A cluster's live health: ``/version`` and the nodes' Ready condition, asked now."""

from __future__ import annotations

from typing import Any

import trio
from attrs import frozen

from lab.errors import LabError, PermissionDenied
from lab.kube import KubeClient, KubeConnection

PROBE_TIMEOUT = 10.0


@frozen(kw_only=True)
class Health:
    """``state`` is Ready (the API answers and every node is Ready), NotReady (it answers, a
    node is not Ready or none is known), Refused (it refused labd's credentials) or
    Unreachable."""

    state: str
    version: str = ""
    nodes: int = 0
    nodes_ready: int = 0
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "Ready"

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ready": self.ready,
            "version": self.version,
            "nodes": self.nodes,
            "nodes_ready": self.nodes_ready,
            "message": self.message,
        }


def _node_ready(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )


async def probe(conn: KubeConnection, *, within: float = PROBE_TIMEOUT) -> Health:
    """Ask the API server now; never raises for the cluster's own failures (they are the
    answer), only on cancellation."""
    try:
        with trio.fail_after(within):
            async with KubeClient(conn, timeout=within) as kube:
                version = str((await kube.version())["gitVersion"])
                listing = await kube.get("/api/v1/nodes")
    except trio.TooSlowError:
        return Health(state="Unreachable", message=f"no answer within {within:g}s")
    except PermissionDenied as exc:
        return Health(state="Refused", message=exc.message)
    except LabError as exc:
        return Health(state="Unreachable", message=exc.message)
    items = listing.get("items") if isinstance(listing, dict) else None
    nodes = items if isinstance(items, list) else []
    ready = sum(1 for node in nodes if _node_ready(node))
    state = "Ready" if nodes and ready == len(nodes) else "NotReady"
    message = "" if state == "Ready" else f"{ready} of {len(nodes)} nodes Ready"
    return Health(
        state=state, version=version, nodes=len(nodes), nodes_ready=ready, message=message
    )
