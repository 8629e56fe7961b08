"""Cluster plans at their edges: each request limit on both sides, the exact steps of every
kind, adding and removing nodes, the spec's round trip through an operation's params, join
tokens, and the files rendered under a node root."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from lab.errors import Invalid
from lab.labd.clusterops import plan
from lab.labd.clusterops.render import NodePaths, render_config, render_unit, unit_name
from lab.labd.clusterops.token import JoinToken, ca_hash, ca_matches, make_token, parse_token

TOKEN = "K10" + "a" * 64 + "::server:s3cret"


def create(**changes: Any) -> plan.ClusterSpec:
    request: dict[str, Any] = {"name": "c1", "servers": ["s1"]} | changes
    return plan.check_create(**request)


def refusal(**changes: Any) -> tuple[list[str], str]:
    with pytest.raises(Invalid) as info:
        create(**changes)
    return list(info.value.details["fields"]), str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "a"},
        {"name": "a" * 63},
        {"name": "a-" * 31 + "b"},
        {"servers": ["server/s1"]},
        {"servers": ["S-1.lab.example"]},
        {"servers": ["a" * 253]},
        {"version": "v1.31.4"},
        {"version": "v10.2.30+k3s12"},
        {"cni": "cilium"},
        {"cni": "none"},
        {"datastore": "sqlite"},
        {"datastore": "postgresql://db/k3s"},
        {"datastore": "mysql://db/k3s"},
        {"datastore": "https://etcd:2379"},
        {"servers": ["a", "b", "c"]},
        {"servers": ["a", "b"], "datastore": "postgres://db"},
        {"servers": ["a", "b", "c", "d"], "allow_even": True},
        {"cluster_cidr": "fd00:42::/56", "service_cidr": "10.96.0.0/12"},
        {"api_address": "k8s.lab.example"},
        {"api_address": "fd00::10"},
        {"api_port": 1},
        {"api_port": 65535},
        {"disable": ["traefik", "servicelb", "local-storage", "metrics-server", "coredns"]},
    ],
)
def test_taken_requests(changes: dict[str, Any]) -> None:
    spec = create(**changes)
    assert spec.name == changes.get("name", "c1")
    assert spec.disable == tuple(changes.get("disable", ()))


DNS_LABEL = "must be a DNS label (a-z, 0-9, '-', at most 63 characters)"
ODD = "embedded etcd needs an odd number for quorum (add or drop one, or pass --allow-even)"
DATASTORE = "datastore must be embedded-etcd, sqlite or an endpoint URL (postgres://…)"


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"name": "a" * 64}, "body.name", f"name '{'a' * 64}' {DNS_LABEL}"),
        ({"name": "-a"}, "body.name", f"name '-a' {DNS_LABEL}"),
        ({"name": "a-"}, "body.name", f"name 'a-' {DNS_LABEL}"),
        ({"name": ""}, "body.name", f"name '' {DNS_LABEL}"),
        (
            {"servers": ["a" * 254]},
            "body.servers",
            f"'{'a' * 254}' is not a server name (server/NAME)",
        ),
        ({"servers": ["-a"]}, "body.servers", "'-a' is not a server name (server/NAME)"),
        ({"servers": ["a."]}, "body.servers", "'a.' is not a server name (server/NAME)"),
        ({"agents": ["w 1"]}, "body.agents", "'w 1' is not a server name (server/NAME)"),
        (
            {"servers": ["s1", "server/s1"], "allow_even": True},
            "body.servers",
            "server/s1 is named twice",
        ),
        ({"agents": ["w", "w"]}, "body.agents", "server/w is named twice"),
        ({"agents": ["server/s1"]}, "body.agents", "server/s1 is named twice"),
        (
            {"servers": []},
            "body.servers",
            "a cluster needs at least one server (--server server/NAME)",
        ),
        (
            {"version": "v1.31.4+k3s"},
            "body.version",
            "version 'v1.31.4+k3s' must look like v1.31.4+k3s1",
        ),
        ({"version": "1.31.4"}, "body.version", "version '1.31.4' must look like v1.31.4+k3s1"),
        ({"version": "v1.31.4 "}, "body.version", "version 'v1.31.4 ' must look like v1.31.4+k3s1"),
        ({"cni": "Flannel"}, "body.cni", "cni must be one of flannel, cilium, none"),
        (
            {"datastore": "sqlite", "servers": ["a", "b", "c"]},
            "body.datastore",
            "the sqlite datastore takes exactly one server",
        ),
        ({"datastore": "http://db"}, "body.datastore", DATASTORE),
        ({"datastore": "etcd"}, "body.datastore", DATASTORE),
        ({"servers": ["a", "b"]}, "body.servers", f"2 servers: {ODD}"),
        ({"servers": ["a", "b", "c", "d"]}, "body.servers", f"4 servers: {ODD}"),
        (
            {"cluster_cidr": "10.42.0.1/16"},
            "body.cluster_cidr",
            "cluster_cidr '10.42.0.1/16' is not a network: 10.42.0.1/16 has host bits set",
        ),
        (
            {"service_cidr": "nope"},
            "body.service_cidr",
            "service_cidr 'nope' is not a network:"
            " 'nope' does not appear to be an IPv4 or IPv6 network",
        ),
        (
            {"api_address": "a b"},
            "body.api_address",
            "api_address 'a b' is not a host name or address",
        ),
        ({"api_port": 65536}, "body.api_port", "api_port must be 1 to 65535"),
        ({"api_port": -1}, "body.api_port", "api_port must be 1 to 65535"),
        (
            {"disable": ["traefik", "dns"]},
            "body.disable",
            "disable: 'dns' is not one of"
            " traefik, servicelb, local-storage, metrics-server, coredns",
        ),
    ],
)
def test_refused_requests(changes: dict[str, Any], field: str, reason: str) -> None:
    fields, message = refusal(**changes)
    assert fields == [field]
    assert message == reason


def test_the_spec_keeps_what_was_asked_and_round_trips_through_params() -> None:
    labels = {"zone": "a"}
    spec = create(
        servers=["server/s1", "s2", "s3"],
        agents=["w1"],
        version="v1.30.1+k3s2",
        cni="none",
        datastore="embedded-etcd",
        cluster_cidr="10.50.0.0/16",
        service_cidr="10.51.0.0/16",
        api_address="10.0.0.10",
        api_port=7443,
        disable=["traefik"],
        labels=labels,
    )
    labels["zone"] = "b"  # the spec holds its own copy
    assert spec == plan.ClusterSpec(
        name="c1",
        servers=("s1", "s2", "s3"),
        agents=("w1",),
        version="v1.30.1+k3s2",
        cni="none",
        datastore="embedded-etcd",
        cluster_cidr="10.50.0.0/16",
        service_cidr="10.51.0.0/16",
        api_address="10.0.0.10",
        api_port=7443,
        labels={"zone": "a"},
        disable=("traefik",),
    )
    params = spec.to_params()
    assert params["servers"] == ["s1", "s2", "s3"] and params["agents"] == ["w1"]
    assert params["disable"] == ["traefik"]
    assert plan.ClusterSpec.from_params({**params, "unknown": 1}) == spec
    assert plan.ClusterSpec.from_params({"name": "c", "servers": ["a"]}) == plan.ClusterSpec(
        name="c", servers=("a",)
    )
    assert plan.ClusterSpec.from_params({"name": "c"}) == plan.ClusterSpec(name="c", servers=())
    assert (spec.first, spec.nodes) == ("s1", ("s1", "s2", "s3", "w1"))
    assert [spec.role(n) for n in spec.nodes] == ["server", "server", "server", "agent"]
    assert spec.api_url == "https://10.0.0.10:7443"
    assert create().api_url == "https://s1:6443"
    assert create().labels == {} and create().agents == ()


def test_an_ipv6_api_address_is_bracketed_in_the_url() -> None:
    spec = create(servers=["s1", "s2", "s3"], api_address="fd00::10")
    assert spec.api_url == "https://[fd00::10]:6443"
    joining = yaml.safe_load(render_config(spec, "s2", token=TOKEN, paths=NodePaths()))
    assert joining["server"] == "https://[fd00::10]:6443"
    first = yaml.safe_load(render_config(spec, "s1", token=TOKEN, paths=NodePaths()))
    assert first["tls-san"] == ["fd00::10"]


def steps(made: tuple[Any, ...]) -> list[tuple[int, str, str]]:
    return [(s.seq, s.name, s.node) for s in made]


def test_the_exact_steps_of_each_kind() -> None:
    spec = create(servers=["s1", "s2", "s3"], agents=["w1"])
    join = ("stage", "configure", "start", "ready")
    expected = [
        *(("preflight", n) for n in ("s1", "s2", "s3", "w1")),
        ("credentials", ""),
        ("stage", "s1"),
        ("configure", "s1"),
        ("start", "s1"),
        ("verify-ca", "s1"),
        ("kubeconfig", "s1"),
        ("ready", "s1"),
        *((step, n) for n in ("s2", "s3", "w1") for step in join),
        ("register", ""),
    ]
    assert steps(plan.create_steps(spec)) == [(i, n, node) for i, (n, node) in enumerate(expected)]
    one = steps(plan.create_steps(create()))
    assert [(n, node) for _, n, node in one][-2:] == [("ready", "s1"), ("register", "")]
    assert steps(plan.add_node_steps("w2")) == [
        (0, "preflight", "w2"),
        (1, "stage", "w2"),
        (2, "configure", "w2"),
        (3, "start", "w2"),
        (4, "ready", "w2"),
    ]
    assert steps(plan.remove_node_steps("w1")) == [
        (0, "cordon", "w1"),
        (1, "drain", "w1"),
        (2, "uninstall", "w1"),
        (3, "delete-node", "w1"),
    ]
    upgrade = ("stage", "cordon", "drain", "restart", "ready", "uncordon")
    two = create(servers=["s1"], agents=["w1"])
    assert steps(plan.upgrade_steps(two)) == [
        (i, step, node)
        for i, (node, step) in enumerate((n, s) for n in ("s1", "w1") for s in upgrade)
    ]
    assert steps(plan.delete_steps(create(agents=["w1", "w2"]))) == [
        (0, "uninstall", "w2"),
        (1, "uninstall", "w1"),
        (2, "uninstall", "s1"),
        (3, "unregister", ""),
    ]


def test_adding_a_node() -> None:
    spec = create(agents=["w1"])
    assert plan.with_node(spec, "server/s2", "server").servers == ("s1", "s2")
    assert plan.with_node(spec, "w2", "agent").agents == ("w1", "w2")
    assert plan.with_node(spec, "w2", "agent").servers == ("s1",)
    for node, role, field, reason in [
        ("w1", "agent", "body.node", "server/w1 is already a node of cluster c1"),
        ("server/s1", "server", "body.node", "server/s1 is already a node of cluster c1"),
        ("w 2", "agent", "body.node", "'w 2' is not a server name (server/NAME)"),
        ("w2", "master", "body.role", "role must be server or agent"),
    ]:
        with pytest.raises(Invalid) as info:
            plan.with_node(spec, node, role)
        assert info.value.details["fields"] == [field] and str(info.value) == reason
    lite = create(datastore="sqlite")
    assert plan.with_node(lite, "w2", "agent").agents == ("w2",)
    with pytest.raises(Invalid) as info:
        plan.with_node(lite, "s2", "server")
    assert str(info.value) == "a sqlite-datastore cluster takes no second server"
    assert info.value.details["fields"] == ["body.role"]


def test_removing_a_node() -> None:
    spec = create(servers=["s1", "s2", "s3"], agents=["w1", "w2"])
    less = plan.without_node(spec, "server/w1")
    assert (less.servers, less.agents) == (("s1", "s2", "s3"), ("w2",))
    less = plan.without_node(spec, "s2")
    assert (less.servers, less.agents) == (("s1", "s3"), ("w1", "w2"))
    for node, reason in [
        ("w9", "server/w9 is not a node of cluster c1"),
        ("s1", "server/s1 is the cluster's first server; delete the cluster instead"),
    ]:
        with pytest.raises(Invalid) as info:
            plan.without_node(spec, node)
        assert info.value.details["fields"] == ["body.node"] and str(info.value) == reason


def test_the_resume_hint_names_the_command() -> None:
    assert plan.resume_hint("c1") == "fix the cause, then run: labctl clusters resume c1"


# --- join tokens --------------------------------------------------------------------------------


def test_a_token_is_made_for_its_ca_and_parses_back() -> None:
    token = make_token(b"ca pem")
    assert token.ca_hash == ca_hash(b"ca pem") and len(token.ca_hash) == 64
    assert token.user == "server" and len(token.secret) == 64
    assert make_token(b"ca pem").secret != token.secret
    text = str(token)
    assert text == f"K10{token.ca_hash}::server:{token.secret}"
    assert parse_token(f"  {text}\n") == token
    assert ca_matches(token, b"ca pem") and not ca_matches(token, b"ca pem ")
    assert token.secret not in repr(token) and "secret=<hidden>" in repr(token)
    assert repr(token) == f"JoinToken(ca_hash={token.ca_hash!r}, user='server', secret=<hidden>)"


@pytest.mark.parametrize(
    "text",
    [
        "K10" + "a" * 63 + "::server:s",
        "K10" + "a" * 65 + "::server:s",
        "K10" + "A" * 64 + "::server:s",
        "K10" + "g" * 64 + "::server:s",
        "K11" + "a" * 64 + "::server:s",
        "K10" + "a" * 64 + ":server:s",
        "K10" + "a" * 64 + "::Server:s",
        "K10" + "a" * 64 + "::server:",
        "K10" + "a" * 64 + "::server:a\nb",
        "x" + TOKEN,
        "s3cret",
    ],
)
def test_a_token_off_the_secure_form_is_refused(text: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_token(text)
    assert str(info.value) == "not a secure k3s token (K10<ca hash>::server:<secret>)"


def test_a_parsed_token_keeps_its_parts() -> None:
    assert parse_token("K10" + "0" * 64 + "::node:a:b") == JoinToken(
        ca_hash="0" * 64, user="node", secret="a:b"
    )


# --- rendered files ------------------------------------------------------------------------------


def test_node_paths_under_a_root() -> None:
    paths = NodePaths(root="/srv/nX/")
    assert (
        paths.binary,
        paths.config_dir,
        paths.config,
        paths.kubeconfig,
        paths.data_dir,
        paths.images_dir,
        paths.tls_dir,
        paths.unit_dir,
        paths.unit_file("k3s"),
    ) == (
        "/srv/nX/usr/local/bin/k3s",
        "/srv/nX/etc/rancher/k3s",
        "/srv/nX/etc/rancher/k3s/config.yaml",
        "/srv/nX/etc/rancher/k3s/k3s.yaml",
        "/srv/nX/var/lib/rancher/k3s",
        "/srv/nX/var/lib/rancher/k3s/agent/images",
        "/srv/nX/var/lib/rancher/k3s/server/tls",
        "/srv/nX/etc/systemd/system",
        "/srv/nX/etc/systemd/system/k3s.service",
    )
    assert NodePaths().config == "/etc/rancher/k3s/config.yaml"
    assert (unit_name("server"), unit_name("agent")) == ("k3s", "k3s-agent")


def test_a_server_config_in_full() -> None:
    spec = create(api_port=7443, labels={"zone": "a", "disk": "ssd"})
    paths = NodePaths(root="/srv/n1")
    config = yaml.safe_load(render_config(spec, "s1", token=TOKEN, paths=paths))
    assert config == {
        "node-name": "s1",
        "token": TOKEN,
        "data-dir": "/srv/n1/var/lib/rancher/k3s",
        "cluster-init": True,
        "write-kubeconfig": "/srv/n1/etc/rancher/k3s/k3s.yaml",
        "write-kubeconfig-mode": "0600",
        "https-listen-port": 7443,
        "tls-san": ["s1"],
        "cluster-cidr": "10.42.0.0/16",
        "service-cidr": "10.43.0.0/16",
        "secrets-encryption": True,
        "node-label": ["disk=ssd", "zone=a"],
    }
    # labels given for the node replace the cluster's
    other = render_config(spec, "s1", token=TOKEN, paths=paths, labels={"role": "db"})
    assert yaml.safe_load(other)["node-label"] == ["role=db"]
    lite = create(datastore="sqlite")
    assert "cluster-init" not in yaml.safe_load(render_config(lite, "s1", token=TOKEN, paths=paths))


def test_units_for_each_role_under_a_root() -> None:
    spec = create(agents=["w1"])
    paths = NodePaths(root="/srv/n1")
    server, agent = (render_unit(spec, n, paths=paths) for n in ("s1", "w1"))
    assert server.startswith("# k3s.service of cluster c1")
    assert agent.startswith("# k3s-agent.service of cluster c1")
    assert "Type=notify\n" in server and "Type=exec\n" in agent
    cmd = "ExecStart=/srv/n1/usr/local/bin/k3s {} --config /srv/n1/etc/rancher/k3s/config.yaml"
    assert cmd.format("server") in server and cmd.format("agent") in agent
