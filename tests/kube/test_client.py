"""KubeClient against the kmock API server (its own process, real TLS): auth by token and by
client certificate, the API's Status mapped to lab.errors leaves, TLS trust."""

from __future__ import annotations

import attrs
import pytest
import trio

from lab import pki
from lab.errors import Conflict, Invalid, NotFound, PermissionDenied, Unavailable
from lab.kube import KubeClient, error_from_response, load_kubeconfig
from tests.kube.kmock_server import KubeAPI

CM = "/api/v1/namespaces/default/configmaps"


def configmap(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"k": "v"},
    }


async def test_version_and_nodes_with_a_token(kube_api: KubeAPI) -> None:
    with trio.fail_after(30):
        async with KubeClient(load_kubeconfig(kube_api.kubeconfig)) as kube:
            version = await kube.version()
            nodes = await kube.get("/api/v1/nodes")
    assert version["gitVersion"] == kube_api.version
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["node-1"]


async def test_client_certificate_authenticates(kube_api: KubeAPI) -> None:
    conn = load_kubeconfig(kube_api.kubeconfig_text(auth="cert"))
    assert conn.token is None
    with trio.fail_after(30):
        async with KubeClient(conn) as kube:
            assert (await kube.version())["gitVersion"] == kube_api.version


async def test_wrong_token_is_permission_denied_without_the_token(kube_api: KubeAPI) -> None:
    conn = attrs.evolve(kube_api.connection(), token="not-the-token")
    with trio.fail_after(30):
        async with KubeClient(conn) as kube:
            with pytest.raises(PermissionDenied, match="refused labd's credentials") as exc:
                await kube.version()
    assert exc.value.details["kube_status"] == 401
    assert "not-the-token" not in str(exc.value)


async def test_no_credentials_at_all_is_refused(kube_api: KubeAPI) -> None:
    conn = attrs.evolve(kube_api.connection(), token=None)
    with trio.fail_after(30):
        async with KubeClient(conn) as kube:
            with pytest.raises(PermissionDenied):
                await kube.get("/api/v1/nodes")


async def test_status_answers_become_intent_named_errors(kube_api: KubeAPI) -> None:
    with trio.fail_after(30):
        async with KubeClient(kube_api.connection()) as kube:
            created = await kube.request("POST", CM, json=configmap("a"))
            assert created.json()["metadata"]["name"] == "a"
            with pytest.raises(Conflict, match="already exists") as conflict:
                await kube.request("POST", CM, json=configmap("a"))
            with pytest.raises(NotFound, match="not found") as missing:
                await kube.get(f"{CM}/absent")
            assert (await kube.get(f"{CM}/a"))["data"] == {"k": "v"}
    assert conflict.value.details["kube_status"] == 409
    assert missing.value.details == {"kube_status": 404, "reason": "Object Not Found"}


async def test_a_ca_that_does_not_match_is_named(kube_api: KubeAPI) -> None:
    other = pki.create_ca("some other CA").cert_pem()
    conn = attrs.evolve(kube_api.connection(), ca_pem=other)
    with trio.fail_after(30):
        async with KubeClient(conn) as kube:
            with pytest.raises(Unavailable, match="certificate does not verify"):
                await kube.version()


async def test_insecure_skip_verify_needs_no_ca(kube_api: KubeAPI) -> None:
    conn = attrs.evolve(kube_api.connection(), ca_pem=None, insecure_skip_verify=True)
    with trio.fail_after(30):
        async with KubeClient(conn) as kube:
            assert (await kube.version())["gitVersion"] == kube_api.version


async def test_a_server_that_is_gone_is_unavailable(kube_api: KubeAPI) -> None:
    conn = kube_api.connection()
    await kube_api.daemon.stop()
    with trio.fail_after(30):
        async with KubeClient(conn, timeout=5) as kube:
            with pytest.raises(Unavailable, match="cannot connect"):
                await kube.version()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, Invalid),
        (422, Invalid),
        (403, PermissionDenied),
        (404, NotFound),
        (409, Conflict),
        (429, Unavailable),
        (500, Unavailable),
        (503, Unavailable),
    ],
)
def test_status_mapping(status: int, cls: type[Exception]) -> None:
    body = {"kind": "Status", "message": "the message", "reason": "Why"}
    err = error_from_response(status, body, "GET /x")
    assert type(err) is cls
    assert err.message == "GET /x: the message"
    assert err.details == {"kube_status": status, "reason": "Why"}
    assert error_from_response(status, None, "GET /x").message == f"GET /x: HTTP {status}"
