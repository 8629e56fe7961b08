"""The classification of /k8s requests: verb, group, resource, namespace, name, RBAC resource."""

from __future__ import annotations

import pytest

from lab.errors import Invalid
from lab.labd.kubeproxy.classify import classify


def c(method: str, path: str, query: str = ""):  # type: ignore[no-untyped-def]
    return classify(method, path.encode(), query.encode())


@pytest.mark.parametrize(
    ("method", "path", "query", "verb", "group", "resource", "ns", "name", "rbac"),
    [
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/pods",
            "",
            "list",
            "",
            "pods",
            "prod",
            "",
            "cluster/home/namespace/prod/pods",
        ),
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/pods/x",
            "",
            "get",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "HEAD",
            "/k8s/home/api/v1/namespaces/prod/pods/x",
            "",
            "get",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/pods",
            "watch=true",
            "watch",
            "",
            "pods",
            "prod",
            "",
            "cluster/home/namespace/prod/pods",
        ),
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/pods",
            "watch=1&rv=3",
            "watch",
            "",
            "pods",
            "prod",
            "",
            "cluster/home/namespace/prod/pods",
        ),
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/pods",
            "watch=false",
            "list",
            "",
            "pods",
            "prod",
            "",
            "cluster/home/namespace/prod/pods",
        ),
        (
            "GET",
            "/k8s/home/api/v1/watch/namespaces/prod/pods",
            "",
            "watch",
            "",
            "pods",
            "prod",
            "",
            "cluster/home/namespace/prod/pods",
        ),
        (
            "POST",
            "/k8s/home/api/v1/namespaces/prod/pods",
            "",
            "create",
            "",
            "pods",
            "prod",
            "",
            "cluster/home/namespace/prod/pods",
        ),
        (
            "PUT",
            "/k8s/home/api/v1/namespaces/prod/pods/x",
            "",
            "update",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "PATCH",
            "/k8s/home/apis/apps/v1/namespaces/prod/deployments/web",
            "",
            "patch",
            "apps",
            "deployments",
            "prod",
            "web",
            "cluster/home/namespace/prod/deployments/web",
        ),
        (
            "DELETE",
            "/k8s/home/api/v1/namespaces/prod/pods/x",
            "",
            "delete",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "DELETE",
            "/k8s/home/api/v1/namespaces/prod/pods",
            "",
            "deletecollection",
            "",
            "pods",
            "prod",
            "",
            "cluster/home/namespace/prod/pods",
        ),
        # cluster-scoped objects, and lists across namespaces: no namespace part
        (
            "GET",
            "/k8s/home/api/v1/nodes/n1",
            "",
            "get",
            "",
            "nodes",
            "",
            "n1",
            "cluster/home/nodes/n1",
        ),
        ("GET", "/k8s/home/api/v1/pods", "", "list", "", "pods", "", "", "cluster/home/pods"),
        (
            "GET",
            "/k8s/home/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
            "",
            "get",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "admin",
            "cluster/home/clusterroles/admin",
        ),
        # a namespace is a cluster-scoped object named by itself
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod",
            "",
            "get",
            "",
            "namespaces",
            "prod",
            "prod",
            "cluster/home/namespaces/prod",
        ),
        (
            "PUT",
            "/k8s/home/api/v1/namespaces/prod/finalize",
            "",
            "update",
            "",
            "namespaces",
            "prod",
            "prod",
            "cluster/home/namespaces/prod/finalize",
        ),
        (
            "GET",
            "/k8s/home/api/v1/namespaces",
            "",
            "list",
            "",
            "namespaces",
            "",
            "",
            "cluster/home/namespaces",
        ),
        # subresources: status/log/scale appended; exec & co. become the verb
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/pods/x/log",
            "",
            "get",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x/log",
        ),
        (
            "PATCH",
            "/k8s/home/apis/apps/v1/namespaces/p/deployments/w/scale",
            "",
            "patch",
            "apps",
            "deployments",
            "p",
            "w",
            "cluster/home/namespace/p/deployments/w/scale",
        ),
        (
            "POST",
            "/k8s/home/api/v1/namespaces/prod/pods/x/exec",
            "command=sh",
            "exec",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/pods/x/exec",
            "command=sh",
            "exec",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "POST",
            "/k8s/home/api/v1/namespaces/prod/pods/x/attach",
            "",
            "attach",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "POST",
            "/k8s/home/api/v1/namespaces/prod/pods/x/portforward",
            "",
            "portforward",
            "",
            "pods",
            "prod",
            "x",
            "cluster/home/namespace/prod/pods/x",
        ),
        (
            "GET",
            "/k8s/home/api/v1/namespaces/prod/services/s/proxy/metrics",
            "",
            "proxy",
            "",
            "services",
            "prod",
            "s",
            "cluster/home/namespace/prod/services/s",
        ),
    ],
)
def test_resource_requests(
    method: str,
    path: str,
    query: str,
    verb: str,
    group: str,
    resource: str,
    ns: str,
    name: str,
    rbac: str,
) -> None:
    req = c(method, path, query)
    assert (req.verb, req.group, req.resource, req.namespace, req.name) == (
        verb,
        group,
        resource,
        ns,
        name,
    )
    assert req.action == f"kube:{verb}"
    assert req.rbac_resource == rbac
    assert req.cluster == "home"
    assert not req.discovery
    assert req.streaming == (verb in ("exec", "attach", "portforward"))


@pytest.mark.parametrize(
    "path",
    [
        "/k8s/home/api",
        "/k8s/home/api/v1",
        "/k8s/home/apis",
        "/k8s/home/apis/apps",
        "/k8s/home/apis/apps/v1",
        "/k8s/home/openapi/v2",
        "/k8s/home/openapi/v3/api/v1",
        "/k8s/home/version",
        "/k8s/home/version/",
    ],
)
def test_api_descriptions_are_discovery(path: str) -> None:
    req = c("GET", path)
    assert req.discovery
    assert req.verb == "get"
    assert req.rbac_resource == "cluster/home/discovery"


def test_other_non_resource_paths() -> None:
    req = c("GET", "/k8s/home/healthz")
    assert not req.discovery
    assert req.rbac_resource == "cluster/home/path/healthz"


def test_the_forwarded_path_is_the_judged_one() -> None:
    req = c("GET", "/k8s/home/api/v1/namespaces/prod/pods", "limit=500")
    assert req.upstream_target == "/api/v1/namespaces/prod/pods?limit=500"


@pytest.mark.parametrize(
    ("path", "cluster", "rbac", "forwarded"),
    [
        # dot segments are removed before anything is judged, the cluster included
        (
            "/k8s/home/../prod/api/v1/namespaces/a/pods",
            "prod",
            "cluster/prod/namespace/a/pods",
            "/api/v1/namespaces/a/pods",
        ),
        (
            "/k8s/home/api/v1/namespaces/dev/../prod/pods/x",
            "home",
            "cluster/home/namespace/prod/pods/x",
            "/api/v1/namespaces/prod/pods/x",
        ),
        (
            "/k8s/home/api/v1/namespaces/dev/%2e%2e/prod/pods/x",
            "home",
            "cluster/home/namespace/prod/pods/x",
            "/api/v1/namespaces/prod/pods/x",
        ),
        (
            "/k8s/home/./api//v1/namespaces/prod/pods/x",
            "home",
            "cluster/home/namespace/prod/pods/x",
            "/api/v1/namespaces/prod/pods/x",
        ),
        (
            "/k8s/home/api/v1/namespaces/pr%6Fd/pods/x",
            "home",
            "cluster/home/namespace/prod/pods/x",
            "/api/v1/namespaces/prod/pods/x",
        ),
    ],
)
def test_paths_are_resolved_first(path: str, cluster: str, rbac: str, forwarded: str) -> None:
    req = c("GET", path)
    assert (req.cluster, req.rbac_resource, req.path) == (cluster, rbac, forwarded)


@pytest.mark.parametrize(
    ("method", "path", "query", "field"),
    [
        ("GET", "/k8s/home/api/v1/namespaces/prod%2Fpods/x", "", "path"),
        ("GET", "/k8s/home/api/v1/namespaces/prod%5Cx/pods", "", "path"),
        ("GET", "/k8s/home/api/v1/namespaces/p%00/pods", "", "path"),
        ("GET", "/k8s/home/api/v1/namespaces/%ff/pods", "", "path"),
        ("GET", "/k8s/../api/users", "", "path"),
        ("GET", "/k8s/home/../../api/users", "", "path"),
        ("GET", "/k8s", "", "path"),
        ("GET", "/k8s/Home/api", "", "path"),
        ("GET", "/k8s/home/api/v1/watch", "", "path"),
        ("TRACE", "/k8s/home/api/v1/pods", "", "method"),
        ("CONNECT", "/k8s/home/api", "", "method"),
        ("GET", "/k8s/home/api/v1/pods", "a=\x01", "query"),
    ],
)
def test_refused_with_the_field_named(method: str, path: str, query: str, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        c(method, path, query)
    assert caught.value.details["fields"] == [field]


def test_what_is_forwarded_judges_the_same_as_what_came_in() -> None:
    """Over many generated paths (dot segments, their encodings, empty segments, encoded
    slashes): a classified request's forwarded path holds no dot segment, and classifying
    that path again gives the same cluster, verb and RBAC resource."""
    import random

    rng = random.Random(17)
    pieces = ["..", ".", "%2e%2e", "%2E.", ".%2e", "%2e", "", "k8s", "home", "prod", "api",
              "apis", "apps", "v1", "namespaces", "pods", "web", "exec", "watch", "%2F", "%5c",
              "p%6fds", "nodes"]  # fmt: skip
    judged = 0
    for _ in range(3000):
        path = "/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(1, 9)))
        if rng.random() < 0.7:
            path = "/k8s/" + rng.choice(["home", "prod"]) + path
        method = rng.choice(["GET", "POST", "DELETE", "PATCH"])
        try:
            req = c(method, path)
        except Invalid:
            continue
        judged += 1
        segments = req.path.split("/")
        assert "." not in segments and ".." not in segments, path
        assert req.rbac_resource.startswith(f"cluster/{req.cluster}/"), path
        again = c(method, f"/k8s/{req.cluster}{req.path}")
        assert (again.cluster, again.verb, again.rbac_resource, again.path) == (
            req.cluster, req.verb, req.rbac_resource, req.path
        ), path  # fmt: skip
    assert judged > 500
