"""The /k8s classifier at its edges: the cluster root, the forwarded spelling, group and version
of API descriptions, cluster names at their length limits, each method's verb, and the message
of each refusal (it reaches the client in the 400)."""

from __future__ import annotations

import pytest

from lab.errors import Invalid
from lab.labd.kubeproxy.classify import KubeRequest, classify, resolve_segments


def c(method: str, path: str, query: str = "") -> KubeRequest:
    return classify(method, path.encode(), query.encode())


@pytest.mark.parametrize("path", ["/k8s/home", "/k8s/home/", "/k8s/home/api/.."])
def test_the_cluster_root_is_a_path_of_its_own(path: str) -> None:
    req = c("GET", path)
    assert (req.cluster, req.path, req.verb, req.discovery) == ("home", "/", "get", False)
    assert req.rbac_resource == "cluster/home/path/"
    assert req.upstream_target == "/"


def test_the_upstream_target_carries_the_query_only_when_there_is_one() -> None:
    assert c("GET", "/k8s/home/api/v1/pods").upstream_target == "/api/v1/pods"
    req = classify("GET", b"/k8s/home/api/v1/pods", "limit=5&continue=x")
    assert req.query == "limit=5&continue=x"
    assert req.upstream_target == "/api/v1/pods?limit=5&continue=x"


@pytest.mark.parametrize(
    ("raw", "forwarded", "name"),
    [
        ("system:admin", "system:admin", "system:admin"),
        ("a-._~!$&'()*+,;=:@b", "a-._~!$&'()*+,;=:@b", "a-._~!$&'()*+,;=:@b"),
        ("%7Ea%41", "~aA", "~aA"),
        ("a%20b", "a%20b", "a b"),
        ("a%25b", "a%25b", "a%b"),
        ("a%3Fb%23c", "a%3Fb%23c", "a?b#c"),
        ("%C3%A9", "%C3%A9", "\xe9"),
    ],
)
def test_the_forwarded_path_has_one_canonical_spelling(raw: str, forwarded: str, name: str) -> None:
    req = c("GET", f"/k8s/home/apis/rbac.authorization.k8s.io/v1/clusterroles/{raw}")
    assert req.path == f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{forwarded}"
    assert req.name == name


@pytest.mark.parametrize(
    ("path", "group", "version"),
    [
        ("/k8s/home/api", "", ""),
        ("/k8s/home/api/v1", "", "v1"),
        ("/k8s/home/apis", "", ""),
        ("/k8s/home/apis/apps", "apps", ""),
        ("/k8s/home/apis/apps/v1", "apps", "v1"),
    ],
)
def test_api_descriptions_carry_their_group_and_version(
    path: str, group: str, version: str
) -> None:
    req = c("GET", path)
    assert (req.group, req.version, req.resource, req.discovery) == (group, version, "", True)


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/k8s/home/api/v1/pods", ("", "v1", "pods", "", "", "")),
        ("/k8s/home/apis/apps/v1beta2/deployments", ("apps", "v1beta2", "deployments", "", "", "")),
        (
            "/k8s/home/api/v1/namespaces/prod/status",
            ("", "v1", "namespaces", "prod", "prod", "status"),
        ),
        ("/k8s/home/api/v1/watch/pods", ("", "v1", "pods", "", "", "")),
        (
            "/k8s/home/api/v1/namespaces/p/services/s/proxy/a/b",
            ("", "v1", "services", "p", "s", "proxy"),
        ),
        (
            "/k8s/home/api/v1/namespaces/p/pods/x/exec/more",
            ("", "v1", "pods", "p", "x", "exec"),
        ),
        (
            "/k8s/home/api/v1/namespaces/p/pods/x/log/more",
            ("", "v1", "pods", "p", "x", "log/more"),
        ),
    ],
)
def test_each_part_of_a_resource_path(path: str, fields: tuple[str, ...]) -> None:
    req = c("GET", path)
    got = (req.group, req.version, req.resource, req.namespace, req.name, req.subresource)
    assert got == fields


def test_what_the_subresource_makes_of_the_verb_and_the_rbac_resource() -> None:
    proxy = c("GET", "/k8s/home/api/v1/namespaces/p/services/s/proxy/a/b")
    assert (proxy.verb, proxy.streaming) == ("proxy", False)
    assert proxy.rbac_resource == "cluster/home/namespace/p/services/s"
    log = c("GET", "/k8s/home/api/v1/namespaces/p/pods/x/log/more")
    assert (log.verb, log.rbac_resource) == ("get", "cluster/home/namespace/p/pods/x/log/more")
    status = c("PUT", "/k8s/home/api/v1/namespaces/prod/status")
    assert (status.verb, status.rbac_resource) == ("update", "cluster/home/namespaces/prod/status")


@pytest.mark.parametrize(
    ("method", "plain", "listing", "named"),
    [
        ("GET", "get", "list", "get"),
        ("get", "get", "list", "get"),
        ("HEAD", "get", "list", "get"),
        ("POST", "create", "create", "create"),
        ("PUT", "update", "update", "update"),
        ("PATCH", "patch", "patch", "patch"),
        ("patch", "patch", "patch", "patch"),
        ("DELETE", "delete", "deletecollection", "delete"),
    ],
)
def test_each_method_has_its_verb(method: str, plain: str, listing: str, named: str) -> None:
    assert c(method, "/k8s/home/healthz").verb == plain
    assert c(method, "/k8s/home/apis/apps/v1").verb == plain
    assert c(method, "/k8s/home/api/v1/namespaces/p/pods").verb == listing
    assert c(method, "/k8s/home/api/v1/namespaces/p/pods/x").verb == named


def test_options_reads_a_description_but_is_no_resource_verb() -> None:
    assert c("OPTIONS", "/k8s/home/version").verb == "get"
    with pytest.raises(Invalid, match="method OPTIONS is not part of the Kubernetes API"):
        c("OPTIONS", "/k8s/home/api/v1/pods")


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("a", True),
        ("0", True),
        ("a-b", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("a" + "-" * 61 + "b", True),
        ("-a", False),
        ("a-", False),
        ("a.b", False),
        ("a_b", False),
        ("aB", False),
    ],
)
def test_cluster_names_are_dns_labels(name: str, taken: bool) -> None:
    if taken:
        assert c("GET", f"/k8s/{name}/api/v1/pods").cluster == name
    else:
        with pytest.raises(Invalid) as caught:
            c("GET", f"/k8s/{name}/api/v1/pods")
        assert str(caught.value) == f"{name!r} is not a cluster name"
        assert caught.value.details["fields"] == ["path"]


@pytest.mark.parametrize(
    ("method", "path", "query", "field", "message"),
    [
        ("GET", "k8s/home/api", "", "path", "the path must start with /"),
        ("GET", "/k8s/h\xe9me/api", "", "path", "the path must be ASCII (percent-encode the rest)"),
        ("GET", "/k8s/home/api/v1/namespaces/%ff/pods", "", "path", "a path segment is not UTF-8"),
        (
            "GET",
            "/k8s/home/api/v1/namespaces/a%7fb/pods",
            "",
            "path",
            "a path segment holds an encoded slash, backslash or control character",
        ),
        (
            "GET",
            "/k8s/home/api/v1/pods/a%09b",
            "",
            "path",
            "a path segment holds an encoded slash, backslash or control character",
        ),
        ("GET", "/k8s", "", "path", "the path must be /k8s/CLUSTER/…"),
        ("GET", "/api/home", "", "path", "the path must be /k8s/CLUSTER/…"),
        ("GET", "/k8s/home/api/v1/watch", "", "path", "a watch path names a resource"),
        (
            "GET",
            "/k8s/home/api/v1/pods",
            "a= b",
            "query",
            "the query string holds a control character",
        ),
        (
            "GET",
            "/k8s/home/api/v1/pods",
            "a=\x7f",
            "query",
            "the query string holds a control character",
        ),
        (
            "TRACE",
            "/k8s/home/healthz",
            "",
            "method",
            "method TRACE is not part of the Kubernetes API",
        ),
        (
            "TRACE",
            "/k8s/home/api/v1/pods",
            "",
            "method",
            "method TRACE is not part of the Kubernetes API",
        ),
    ],
)
def test_each_refusal_names_its_field_and_says_why(
    method: str, path: str, query: str, field: str, message: str
) -> None:
    with pytest.raises(Invalid) as caught:
        classify(method, path.encode("utf-8"), query.encode())
    assert str(caught.value) == message
    assert caught.value.details["fields"] == [field]


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        (b"/", []),
        (b"//", []),
        (b"/a//b/", ["a", "b"]),
        (b"/a/./b/../c", ["a", "c"]),
        (b"/../a", ["a"]),
        (b"/a/b/..", ["a"]),
        (b"/a/b/../", ["a"]),
        (b"/a/%2E/b", ["a", "b"]),
    ],
)
def test_resolved_segments(raw: bytes, segments: list[str]) -> None:
    assert resolve_segments(raw) == segments
