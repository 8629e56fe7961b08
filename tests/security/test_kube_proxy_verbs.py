"""The verb labd judges must be the one the API server acts on.

The API server reads ``watch`` from the *first* value of the parameter, and only ``0`` and
``false`` (any case) are false: ``?watch=yes``, ``?watch`` and ``?watch=1&watch=0`` all start
a watch. A named GET is a get whatever ``watch`` says. Judging any of these otherwise would let
a role that may ``list`` but not ``watch`` hold a watch open (and audit it as a list).
"""

from __future__ import annotations

import pytest

from lab.labd.kubeproxy.classify import classify

PODS = b"/k8s/home/api/v1/namespaces/prod/pods"


@pytest.mark.parametrize(
    ("query", "verb"),
    [
        ("watch=1", "watch"),
        ("watch=true", "watch"),
        ("watch=TRUE", "watch"),
        ("watch=yes", "watch"),
        ("watch=", "watch"),
        ("watch", "watch"),
        ("watch=1&watch=0", "watch"),
        ("w%61tch=on", "watch"),
        ("watch=0", "list"),
        ("watch=False", "list"),
        ("watch=0&watch=1", "list"),
        ("", "list"),
        ("watchers=1", "list"),
    ],
)
def test_a_list_or_a_watch_is_judged_as_the_api_server_reads_it(query: str, verb: str) -> None:
    assert classify("GET", PODS, query).verb == verb


@pytest.mark.parametrize("query", ["watch=1", "watch=yes"])
def test_a_named_get_with_a_watch_parameter_is_a_get(query: str) -> None:
    req = classify("GET", PODS + b"/web-0", query)
    assert (req.verb, req.rbac_resource) == ("get", "cluster/home/namespace/prod/pods/web-0")


def test_the_legacy_watch_path_is_a_watch_even_with_a_name() -> None:
    req = classify("GET", b"/k8s/home/api/v1/watch/namespaces/prod/pods/web-0", "")
    assert req.verb == "watch"


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        (b"/namespaces/prod/services/vault:8200/proxy/v1/secret", "namespace/prod/services/vault"),
        (b"/namespaces/prod/services/https:vault:8200/proxy/", "namespace/prod/services/vault"),
        (b"/namespaces/prod/services/https:vault:/proxy", "namespace/prod/services/vault"),
        (b"/namespaces/prod/pods/web-0:8080/proxy/metrics", "namespace/prod/pods/web-0"),
        (b"/nodes/n1:10250/proxy/configz", "nodes/n1"),
        (b"/namespaces/prod/services/vault/proxy/", "namespace/prod/services/vault"),
    ],
)
def test_a_proxy_is_judged_on_the_object_not_its_scheme_or_port(path: bytes, resource: str) -> None:
    """``services/vault:8200/proxy`` reaches Service vault: a rule naming vault must see it."""
    req = classify("GET", b"/k8s/home/api/v1" + path, "")
    assert (req.verb, req.rbac_resource) == ("proxy", f"cluster/home/{resource}")
