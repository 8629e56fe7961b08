"""Abuse cases of labd's Kubernetes API proxy (/k8s/CLUSTER/…), written before the proxy.

Who else could present a request here, and what would they get? A client naming its own
identity (Impersonate-*, Authorization, front-proxy headers), an agent or a user without a
certificate, a viewer trying to change things, a path that says one thing and means another,
and anyone hoping to read the cluster's own credentials back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from lab import pki
from tests.kube.kmock_server import KubeAPI
from tests.kubeproxy.conftest import recording_api  # noqa: F401 - the fixture
from tests.kubeproxy.rig import (
    ProxyRig,
    proxy_rig,
    raw_request,
    requires_kubectl,
    upstream_requests,
)
from tests.labd.harness import Credentials

PODS = "/k8s/home/api/v1/namespaces/default/pods"
FORGED = [
    ("Authorization", "Bearer forged"),
    ("authorization", "Basic YWRtaW46YWRtaW4="),
    ("Impersonate-User", "admin"),
    ("impersonate-user", "system:admin"),
    ("IMPERSONATE-USER", "root"),
    ("Impersonate-Group", "system:masters"),
    ("impersonate-group", "system:nodes"),
    ("Impersonate-Uid", "0"),
    ("Impersonate-Extra-Scopes", "view"),
    ("impersonate-extra-acme.com%2Fproject", "x"),
    ("X-Remote-User", "admin"),
    ("X-Remote-Group", "system:masters"),
    ("Proxy-Authorization", "Basic eDp4"),
]
FORGED_VALUES = {v for _, v in FORGED}


def _headers(seen: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in seen["headers"]]


async def _status_of(rig: ProxyRig, **params: str) -> list[dict[str, Any]]:
    return [e for e in await rig.audit(**params) if e["action"].startswith("kube:")]


async def test_client_identity_headers_never_reach_the_api_server(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    with trio.fail_after(90):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            vic = await rig.user("vic", "viewer")
            answer = await raw_request(rig.labd, vic, "GET", PODS, FORGED)
            assert answer.status == 200, answer.body
            seen = [
                r
                for r in await upstream_requests(recording_api.connection())
                if r["path"].startswith("/api/v1/namespaces/default/pods")
            ]
            assert len(seen) == 1
            headers = _headers(seen[0])
            assert not FORGED_VALUES & {v for _, v in headers}
            assert [v for k, v in headers if k == "impersonate-user"] == ["labd:vic"]
            assert not [k for k, _ in headers if k.startswith(("impersonate-extra", "x-remote"))]
            assert not [k for k, _ in headers if k in ("impersonate-uid", "proxy-authorization")]
            # The one Authorization is the cluster's own (kmock accepted it), not the client's.
            assert [v for k, v in headers if k == "authorization"] == [
                f"Bearer {recording_api.token}"
            ]
            # The viewer's list was judged as the viewer, and audited with what was sent.
            (entry,) = await _status_of(rig, user="user/vic")
            assert entry["action"] == "kube:list"
            assert entry["details"]["impersonated_user"] == "labd:vic"
            assert entry["details"]["impersonated_groups"] == []


async def test_agents_and_anonymous_clients_are_refused(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    with trio.fail_after(90):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            token = await rig.labd.create_token(rig.admin, "agent")
            agent = await rig.labd.enroll_agent("web1", token)
            refused = await raw_request(rig.labd, agent, "GET", PODS)
            assert refused.status == 403
            assert refused.json()["kind"] == "Status"
            assert refused.json()["reason"] == "Forbidden"
            assert "server certificate cannot use" in refused.json()["message"]
            # A bastion's certificate (issued by the same CA) is no better.
            assert rig.labd.context is not None
            bastion_key = pki.generate_key()
            bastion_cert, issued = pki.issue_bastion_cert(
                rig.labd.context.ca.signer, pki.make_csr(bastion_key, "bastion/pxe1"), "pxe1"
            )
            await rig.labd.context.store.certificates.record(issued.to_record())
            bastion = Credentials(
                key_pem=bastion_key, cert_pem=bastion_cert, subject="bastion/pxe1"
            )
            by_bastion = await raw_request(rig.labd, bastion, "GET", PODS)
            assert by_bastion.status == 403
            assert "bastion certificate cannot use" in by_bastion.json()["message"]
            anonymous = [await raw_request(rig.labd, None, "GET", PODS) for _ in range(3)]
            assert {a.status for a in anonymous} == {401}
            assert anonymous[0].json()["reason"] == "Unauthorized"
            assert not await upstream_requests(recording_api.connection())
            entries = await _status_of(rig)
            by_user = sorted((e["user"], e["result"]) for e in entries)
            # The agent's refusal names it; three anonymous ones leave one entry (a storm of
            # them would otherwise fill the log).
            assert by_user == [
                ("", "denied"),
                ("bastion/pxe1", "denied"),
                ("server/web1", "denied"),
            ]


@requires_kubectl
async def test_a_viewers_delete_is_refused_in_kubectls_format_and_audited(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    with trio.fail_after(120):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            vic = await rig.user("vic", "viewer")
            out = await rig.kubectl(rig.kubeconfig(vic), "delete", "pod", "web", "-n", "prod")
            assert out.returncode == 1
            assert out.stderr.decode().startswith("Error from server (Forbidden): ")
            assert "kube:delete on cluster/home/namespace/prod/pods/web" in out.stderr.decode()
            assert not [
                r
                for r in await upstream_requests(recording_api.connection())
                if r["method"] == "DELETE"
            ]
            (entry,) = [e for e in await _status_of(rig) if e["action"] == "kube:delete"]
            assert entry["user"] == "user/vic"
            assert entry["result"] == "denied"
            assert entry["resource"] == "cluster/home/namespace/prod/pods/web"
            assert entry["details"]["status"] == 403
            assert entry["details"]["namespace"] == "prod"


async def test_path_tricks_are_judged_on_the_resolved_path(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    with trio.fail_after(120):
        async with proxy_rig(tmp_path, {"home": recording_api, "lab": recording_api}) as rig:
            await rig.role(
                "dev-reader",
                [
                    ("allow", "kube:*", "cluster/lab/namespace/dev/*"),
                    ("allow", "kube:list", "cluster/lab/namespace/dev/pods"),
                ],
            )
            dan = await rig.user("dan", "dev-reader")
            ok = await raw_request(rig.labd, dan, "GET", "/k8s/lab/api/v1/namespaces/dev/pods")
            assert ok.status == 200, ok.body
            tricks = [
                "/k8s/lab/api/v1/namespaces/dev/../prod/pods",
                "/k8s/lab/api/v1/namespaces/dev/%2E%2E/prod/pods",
                "/k8s/lab/../home/api/v1/namespaces/dev/pods",
                "/k8s/lab/api/v1/namespaces/dev/pods/../../../../../../home/api/v1/pods",
            ]
            for target in tricks:
                answer = await raw_request(rig.labd, dan, "GET", target)
                assert answer.status == 403, (target, answer.body)
            for target in (
                "/k8s/lab/api/v1/namespaces/dev%2F..%2Fprod/pods",
                "/k8s/lab/api/v1/namespaces/dev%5C..%5Cprod/pods",
            ):
                answer = await raw_request(rig.labd, dan, "GET", target)
                assert answer.status == 400, (target, answer.body)
            # Out of /k8s altogether: the proxy refuses to forward it anywhere.
            escaped = await raw_request(rig.labd, dan, "GET", "/k8s/../api/users")
            assert escaped.status == 400
            paths = [r["path"] for r in await upstream_requests(recording_api.connection())]
            assert paths == ["/api/v1/namespaces/dev/pods"]
            denied = {
                e["resource"]
                for e in await _status_of(rig, user="user/dan")
                if e["result"] == "denied"
            }
            assert denied == {
                "cluster/lab/namespace/prod/pods",
                "cluster/home/namespace/dev/pods",
                "cluster/home/pods",
            }


@requires_kubectl
async def test_cluster_credentials_never_reach_the_client(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    with trio.fail_after(120):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            kc = rig.kubeconfig(rig.admin)
            secrets = [
                recording_api.token.encode(),
                recording_api.client_key_pem.strip().splitlines()[1],
            ]
            answers = [
                await raw_request(rig.labd, rig.admin, "GET", target)
                for target in (
                    "/k8s/home/api/v1/namespaces/default/pods",
                    "/k8s/home/api/v1/namespaces/default/pods/missing",
                    "/k8s/home/version",
                    "/k8s/home/api",
                    "/k8s/nowhere/api",
                )
            ]
            out = await rig.kubectl(kc, "get", "pods", "-v=9")
            transcript = out.stdout + out.stderr
            for answer in answers:
                transcript += answer.body + b"".join(n + v for n, v in answer.headers)
            assert answers[-1].status == 404
            for secret in secrets:
                assert secret not in transcript
            assert b"labd:admin" not in transcript  # not even the impersonation goes back
            entries = await rig.audit()
            assert not [e for e in entries if recording_api.token in str(e)]


async def test_an_answer_whose_audit_entry_cannot_be_written_is_withheld(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    import sqlite3

    with trio.fail_after(90):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            # Hold SQLite's write lock: reads go on (WAL), every audit write times out.
            lock = sqlite3.connect(rig.labd.data_dir / "labd.db", isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")
                answer = await raw_request(rig.labd, rig.admin, "GET", PODS)
            finally:
                lock.rollback()
                lock.close()
            assert answer.status == 503
            assert answer.json()["kind"] == "Status"
            assert answer.json()["reason"] == "ServiceUnavailable"
            assert b'"items"' not in answer.body
            again = await raw_request(rig.labd, rig.admin, "GET", PODS)
            assert again.status == 200
