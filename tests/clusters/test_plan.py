"""The pure parts of cluster operations: requests checked (the field named), the steps of each
kind in order, and the one config template (identical server flags, CNI switches)."""

from __future__ import annotations

import pytest
import yaml

from lab.errors import Invalid
from lab.labd.clusterops import plan
from lab.labd.clusterops.render import NodePaths, render_config, render_unit

TOKEN = "K10" + "a" * 64 + "::server:s3cret"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"servers": []}, "body.servers"),
        ({"servers": ["a", "b"]}, "body.servers"),  # even etcd without --allow-even
        ({"servers": ["a"], "agents": ["a"]}, "body.agents"),
        ({"servers": ["a", "b"], "datastore": "sqlite", "allow_even": True}, "body.datastore"),
        ({"datastore": "mongodb://x"}, "body.datastore"),
        ({"cni": "calico"}, "body.cni"),
        ({"version": "1.31"}, "body.version"),
        ({"cluster_cidr": "10.42.0.0/33"}, "body.cluster_cidr"),
        ({"name": "Bad_Name"}, "body.name"),
        ({"servers": ["web 1"]}, "body.servers"),
        ({"disable": ["everything"]}, "body.disable"),
        ({"api_port": 0}, "body.api_port"),
    ],
)
def test_bad_requests_name_the_field(changes: dict[str, object], field: str) -> None:
    request: dict[str, object] = {"name": "c1", "servers": ["a"]} | changes
    with pytest.raises(Invalid) as info:
        plan.check_create(**request)  # type: ignore[arg-type]
    assert info.value.details["fields"] == [field]


def test_even_servers_with_allow_even_and_external_datastore() -> None:
    spec = plan.check_create(name="c1", servers=["a", "b"], allow_even=True)
    assert spec.servers == ("a", "b")
    ext = plan.check_create(name="c1", servers=["a", "b"], datastore="postgres://u:p@db/k3s")
    assert ext.datastore == "external"
    assert "u:p" not in str(ext.to_params())  # the URL itself is sealed apart


def test_steps_of_each_kind() -> None:
    spec = plan.check_create(name="c1", servers=["s1", "s2", "s3"], agents=["w1"])
    steps = [(s.name, s.node) for s in plan.create_steps(spec)]
    assert steps[:4] == [("preflight", n) for n in ("s1", "s2", "s3", "w1")]
    assert steps[4] == ("credentials", "")
    nodes_in_order = [node for name, node in steps if name == "start"]
    assert nodes_in_order == ["s1", "s2", "s3", "w1"]  # other servers one at a time, then agents
    assert steps.index(("verify-ca", "s1")) < steps.index(("stage", "s2"))
    assert steps[-1] == ("register", "")
    upgrade = [(s.name, s.node) for s in plan.upgrade_steps(spec)]
    assert [n for name, n in upgrade if name == "restart"] == ["s1", "s2", "s3", "w1"]
    # each node is back Ready and uncordoned before the next is cordoned
    assert upgrade.index(("uncordon", "s1")) < upgrade.index(("cordon", "s2"))
    delete = [(s.name, s.node) for s in plan.delete_steps(spec)]
    assert delete == [
        ("uninstall", "w1"),
        ("uninstall", "s3"),
        ("uninstall", "s2"),
        ("uninstall", "s1"),
        ("unregister", ""),
    ]
    with pytest.raises(Invalid):
        plan.without_node(spec, "s1")  # the first server goes with the cluster only


@pytest.mark.parametrize(
    ("cni", "flags"),
    [
        ("flannel", {}),
        ("none", {"flannel-backend": "none", "disable-network-policy": True}),
        (
            "cilium",
            {
                "flannel-backend": "none",
                "disable-network-policy": True,
                "disable-kube-proxy": True,
            },
        ),
    ],
)
def test_one_template_identical_server_flags(cni: str, flags: dict[str, object]) -> None:
    spec = plan.check_create(
        name="c1",
        servers=["s1", "s2", "s3"],
        agents=["w1"],
        cni=cni,
        disable=["traefik"],
        api_address="10.0.0.10",
    )
    configs = {
        node: yaml.safe_load(render_config(spec, node, token=TOKEN, paths=NodePaths()))
        for node in spec.nodes
    }
    first, second, third = (configs[n] for n in spec.servers)
    assert first["cluster-init"] is True and "server" not in first
    assert second["server"] == third["server"] == "https://10.0.0.10:6443"
    shared = ("cluster-cidr", "service-cidr", "secrets-encryption", "disable", "tls-san")
    for key in (*shared, *flags, "flannel-backend", "disable-kube-proxy"):
        assert first.get(key) == second.get(key) == third.get(key), key
    for key, value in flags.items():
        assert first[key] == value
    if cni == "flannel":
        assert "flannel-backend" not in first and "disable-kube-proxy" not in first
    assert first["disable"] == ["traefik"] and first["secrets-encryption"] is True
    agent = configs["w1"]
    assert set(agent) == {"node-name", "token", "data-dir", "server"}
    assert agent["token"] == TOKEN and agent["server"] == "https://10.0.0.10:6443"
    unit = render_unit(spec, "w1", paths=NodePaths())
    assert "ExecStart=/usr/local/bin/k3s agent --config /etc/rancher/k3s/config.yaml" in unit
    assert "Type=notify" in render_unit(spec, "s1", paths=NodePaths())


def test_external_datastore_only_in_server_configs() -> None:
    spec = plan.check_create(
        name="c1", servers=["s1", "s2"], agents=["w1"], datastore="postgres://x"
    )
    url = "postgres://k3s:pw@db:5432/k3s"
    for node in spec.servers:  # every server talks to the datastore; none joins another
        server = yaml.safe_load(
            render_config(spec, node, token=TOKEN, paths=NodePaths(), datastore_endpoint=url)
        )
        assert server["datastore-endpoint"] == url
        assert "cluster-init" not in server and "server" not in server
    agent = render_config(spec, "w1", token=TOKEN, paths=NodePaths(), datastore_endpoint=url)
    assert url not in agent
