"""The files labd writes on a node: k3s's config.yaml (one template for every node) and its
systemd unit, with the node's paths under an optional root (``cluster_node_root``)."""

from __future__ import annotations

from collections.abc import Mapping

import jinja2
from attrs import frozen

from lab.labd.clusterops.plan import ClusterSpec

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lab.labd.clusterops", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 -- YAML and unit files, values quoted with tojson
)


@frozen(kw_only=True)
class NodePaths:
    """Where k3s lives on one node; ``root`` is "/" on a real node."""

    root: str = "/"

    def _at(self, path: str) -> str:
        return self.root.rstrip("/") + path

    @property
    def binary(self) -> str:
        return self._at("/usr/local/bin/k3s")

    @property
    def config_dir(self) -> str:
        return self._at("/etc/rancher/k3s")

    @property
    def config(self) -> str:
        return self._at("/etc/rancher/k3s/config.yaml")

    @property
    def kubeconfig(self) -> str:
        return self._at("/etc/rancher/k3s/k3s.yaml")

    @property
    def data_dir(self) -> str:
        return self._at("/var/lib/rancher/k3s")

    @property
    def images_dir(self) -> str:
        return self._at("/var/lib/rancher/k3s/agent/images")

    @property
    def tls_dir(self) -> str:
        return self._at("/var/lib/rancher/k3s/server/tls")

    @property
    def unit_dir(self) -> str:
        return self._at("/etc/systemd/system")

    def unit_file(self, unit: str) -> str:
        return f"{self.unit_dir}/{unit}.service"


def unit_name(role: str) -> str:
    return "k3s" if role == "server" else "k3s-agent"


def render_config(
    spec: ClusterSpec,
    node: str,
    *,
    token: str,
    paths: NodePaths,
    datastore_endpoint: str = "",
    labels: Mapping[str, str] | None = None,
) -> str:
    """config.yaml for ``node``: the server flags identical on every server by construction."""
    role = spec.role(node)
    return _ENV.get_template("k3s-config.yaml.j2").render(
        spec=spec,
        node=node,
        role=role,
        first=node == spec.first,
        token=token,
        paths=paths,
        datastore_endpoint=datastore_endpoint,
        labels=sorted((labels or spec.labels).items()),
    )


def render_unit(spec: ClusterSpec, node: str, *, paths: NodePaths) -> str:
    role = spec.role(node)
    return _ENV.get_template("k3s.service.j2").render(
        spec=spec, role=role, unit=unit_name(role), paths=paths
    )
