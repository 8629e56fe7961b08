"""What an operation does, decided before anything runs: requests checked, steps listed.

Pure: no I/O. A cluster's *spec* (its nodes and the settings every node's config is rendered
from) travels in each operation's ``params``, so the spec after the last operation that
succeeded is the cluster's current one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from attrs import asdict, evolve, field, frozen

from lab.errors import Invalid
from lab.model.operations import OpStep

Cni = Literal["flannel", "cilium", "none"]
CNIS: tuple[str, ...] = ("flannel", "cilium", "none")
DEFAULT_VERSION = "v1.31.4+k3s1"
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_VERSION = re.compile(r"v\d+\.\d+\.\d+(\+k3s\d+)?")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?")


def _bad(message: str, field_name: str) -> Invalid:
    return Invalid(message, details={"fields": [f"body.{field_name}"]})


@frozen(kw_only=True)
class ClusterSpec:
    """A cluster as labd builds it; no secret (the datastore URL, if any, is sealed apart)."""

    name: str
    servers: tuple[str, ...]
    agents: tuple[str, ...] = ()
    version: str = DEFAULT_VERSION
    cni: Cni = "flannel"
    datastore: str = "embedded-etcd"  # embedded-etcd | sqlite | external
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    api_address: str = ""
    api_port: int = 6443
    labels: dict[str, str] = field(factory=dict)
    disable: tuple[str, ...] = ()

    @property
    def first(self) -> str:
        return self.servers[0]

    @property
    def nodes(self) -> tuple[str, ...]:
        return (*self.servers, *self.agents)

    def role(self, node: str) -> str:
        return "server" if node in self.servers else "agent"

    @property
    def api_url(self) -> str:
        host = self.api_address or self.first
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return f"https://{host}:{self.api_port}"

    def to_params(self) -> dict[str, Any]:
        data = asdict(self)
        data["servers"] = list(self.servers)
        data["agents"] = list(self.agents)
        data["disable"] = list(self.disable)
        return data

    @classmethod
    def from_params(cls, data: dict[str, Any]) -> ClusterSpec:
        known = {k: v for k, v in data.items() if k in _SPEC_FIELDS}
        known["servers"] = tuple(known.get("servers", ()))
        known["agents"] = tuple(known.get("agents", ()))
        known["disable"] = tuple(known.get("disable", ()))
        return cls(**known)


_SPEC_FIELDS = frozenset(
    [
        "name",
        "servers",
        "agents",
        "version",
        "cni",
        "datastore",
        "cluster_cidr",
        "service_cidr",
        "api_address",
        "api_port",
        "labels",
        "disable",
    ]
)


def check_name(name: str, what: str = "name") -> str:
    if not _NAME.fullmatch(name):
        raise _bad(
            f"{what} {name!r} must be a DNS label (a-z, 0-9, '-', at most 63 characters)", what
        )
    return name


def check_version(version: str, what: str = "version") -> str:
    if not _VERSION.fullmatch(version):
        raise _bad(f"version {version!r} must look like v1.31.4+k3s1", what)
    return version


def _nodes(names: Iterable[str], what: str) -> tuple[str, ...]:
    out: list[str] = []
    for raw in names:
        name = raw.removeprefix("server/")
        if not _HOST.fullmatch(name):
            raise _bad(f"{raw!r} is not a server name (server/NAME)", what)
        out.append(name)
    return tuple(out)


def check_create(
    *,
    name: str,
    servers: Sequence[str],
    agents: Sequence[str] = (),
    version: str = DEFAULT_VERSION,
    cni: str = "flannel",
    datastore: str = "embedded-etcd",
    allow_even: bool = False,
    cluster_cidr: str = "10.42.0.0/16",
    service_cidr: str = "10.43.0.0/16",
    api_address: str = "",
    api_port: int = 6443,
    disable: Sequence[str] = (),
    labels: dict[str, str] | None = None,
) -> ClusterSpec:
    """The spec of a new cluster; :class:`Invalid` naming the field for anything wrong.

    An even number of embedded-etcd servers is refused unless ``allow_even`` (etcd's quorum is
    no better with 2 than with 1, and 4 tolerates no more failures than 3).
    """
    check_name(name)
    srv = _nodes(servers, "servers")
    agt = _nodes(agents, "agents")
    if not srv:
        raise _bad("a cluster needs at least one server (--server server/NAME)", "servers")
    seen: set[str] = set()
    for node in (*srv, *agt):
        if node in seen:
            raise _bad(f"server/{node} is named twice", "agents" if node in agt else "servers")
        seen.add(node)
    check_version(version)
    if cni not in CNIS:
        raise _bad(f"cni must be one of {', '.join(CNIS)}", "cni")
    kind = _datastore_kind(datastore)
    if kind == "sqlite" and len(srv) > 1:
        raise _bad("the sqlite datastore takes exactly one server", "datastore")
    if kind == "embedded-etcd" and len(srv) % 2 == 0 and not allow_even:
        raise _bad(
            f"{len(srv)} servers: embedded etcd needs an odd number for quorum"
            " (add or drop one, or pass --allow-even)",
            "servers",
        )
    for cidr, what in ((cluster_cidr, "cluster_cidr"), (service_cidr, "service_cidr")):
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise _bad(f"{what} {cidr!r} is not a network: {exc}", what) from exc
    if api_address and not _HOST.fullmatch(api_address):
        raise _bad(f"api_address {api_address!r} is not a host name or address", "api_address")
    if not 1 <= api_port <= 65535:
        raise _bad("api_port must be 1 to 65535", "api_port")
    return ClusterSpec(
        name=name,
        servers=srv,
        agents=agt,
        version=version,
        cni=cni,  # type: ignore[arg-type]
        datastore=kind,
        cluster_cidr=cluster_cidr,
        service_cidr=service_cidr,
        api_address=api_address,
        api_port=api_port,
        disable=tuple(_component(d) for d in disable),
        labels=dict(labels or {}),
    )


_COMPONENTS = ("traefik", "servicelb", "local-storage", "metrics-server", "coredns")


def _component(item: str) -> str:
    if item not in _COMPONENTS:
        raise _bad(f"disable: {item!r} is not one of {', '.join(_COMPONENTS)}", "disable")
    return item


def _datastore_kind(datastore: str) -> str:
    if datastore in ("embedded-etcd", "sqlite"):
        return datastore
    if datastore.startswith(("postgres://", "postgresql://", "mysql://", "https://")):
        return "external"
    raise _bad(
        "datastore must be embedded-etcd, sqlite or an endpoint URL (postgres://…)", "datastore"
    )


# --- the steps of each kind ----------------------------------------------------------------


def _numbered(pairs: Iterable[tuple[str, str]]) -> tuple[OpStep, ...]:
    return tuple(OpStep(seq=i, name=n, node=node) for i, (n, node) in enumerate(pairs))


JOIN = ("stage", "configure", "start", "ready")


def create_steps(spec: ClusterSpec) -> tuple[OpStep, ...]:
    """Preflight everywhere; credentials; the first server (then its kubeconfig); the other
    servers one at a time; the agents; register."""
    pairs = [("preflight", n) for n in spec.nodes]
    pairs.append(("credentials", ""))
    pairs += [("stage", spec.first), ("configure", spec.first), ("start", spec.first)]
    pairs += [("verify-ca", spec.first), ("kubeconfig", spec.first), ("ready", spec.first)]
    for node in (*spec.servers[1:], *spec.agents):
        pairs += [(step, node) for step in JOIN]
    pairs.append(("register", ""))
    return _numbered(pairs)


def add_node_steps(node: str) -> tuple[OpStep, ...]:
    return _numbered([("preflight", node), *((step, node) for step in JOIN)])


def remove_node_steps(node: str) -> tuple[OpStep, ...]:
    return _numbered(
        [("cordon", node), ("drain", node), ("uninstall", node), ("delete-node", node)]
    )


UPGRADE = ("stage", "cordon", "drain", "restart", "ready", "uncordon")


def upgrade_steps(spec: ClusterSpec) -> tuple[OpStep, ...]:
    """Servers one at a time (each: stage, cordon, drain, restart, wait Ready, uncordon),
    then agents."""
    return _numbered((step, node) for node in spec.nodes for step in UPGRADE)


def delete_steps(spec: ClusterSpec) -> tuple[OpStep, ...]:
    """Agents first, then servers, the first server last; then forget the cluster."""
    order = (*reversed(spec.agents), *reversed(spec.servers))
    return _numbered([*(("uninstall", n) for n in order), ("unregister", "")])


def with_node(spec: ClusterSpec, node: str, role: str) -> ClusterSpec:
    """The spec with ``node`` added as ``role`` (server or agent)."""
    (name,) = _nodes([node], "node")
    if name in spec.nodes:
        raise _bad(f"server/{name} is already a node of cluster {spec.name}", "node")
    if role == "server":
        if spec.datastore == "sqlite":
            raise _bad("a sqlite-datastore cluster takes no second server", "role")
        return evolve(spec, servers=(*spec.servers, name))
    if role != "agent":
        raise _bad("role must be server or agent", "role")
    return evolve(spec, agents=(*spec.agents, name))


def without_node(spec: ClusterSpec, node: str) -> ClusterSpec:
    name = node.removeprefix("server/")
    if name not in spec.nodes:
        raise _bad(f"server/{name} is not a node of cluster {spec.name}", "node")
    if name == spec.first:
        raise _bad(
            f"server/{name} is the cluster's first server; delete the cluster instead", "node"
        )
    return evolve(
        spec,
        servers=tuple(n for n in spec.servers if n != name),
        agents=tuple(n for n in spec.agents if n != name),
    )


def resume_hint(cluster: str) -> str:
    return f"fix the cause, then run: labctl clusters resume {cluster}"
