"""Real kubectl through labd's /k8s proxy against kmock: get, apply, delete, watch; what the
API server saw; what the audit log kept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import trio

from tests.kube.kmock_server import KubeAPI
from tests.kubeproxy.rig import KUBECTL, ProxyRig, proxy_rig, requires_kubectl, upstream_requests

pytestmark = requires_kubectl

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  containers:
    - name: web
      image: nginx:1.27
"""


def kube_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["action"].startswith("kube:")]


async def watch_until(rig: ProxyRig, kubeconfig: Path, needle: bytes, ready: trio.Event) -> bytes:
    """Run ``kubectl get pods --watch`` until its output shows ``needle``; set ``ready`` once
    kubectl logs that its watch request was answered (the stream is open)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(rig.tmp / "home"),
        "KUBECONFIG": str(kubeconfig),
    }
    argv = [KUBECTL, "get", "pods", "-n", "default", "--watch", "--output-watch-events", "-v=6"]
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    seen = b""
    try:
        assert proc.stdout is not None
        while needle not in seen:
            chunk = await proc.stdout.receive_some(65536)
            assert chunk, seen
            seen += chunk
            if b"watch=true 200 OK" in seen:
                ready.set()
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
    return seen


async def test_get_apply_watch_delete_as_admin(tmp_path: Path, recording_api: KubeAPI) -> None:
    with trio.fail_after(180):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            kc = rig.kubeconfig(rig.admin, namespace="default")
            empty = await rig.kubectl(kc, "get", "pods")
            assert empty.returncode == 0, empty.stderr
            assert b"No resources found in default namespace" in empty.stderr
            manifest = tmp_path / "pod.yaml"
            manifest.write_text(POD)
            watched = b""
            async with trio.open_nursery() as nursery:
                ready = trio.Event()

                async def watch() -> None:
                    nonlocal watched
                    watched = await watch_until(rig, kc, b"DELETED", ready)

                nursery.start_soon(watch)
                await ready.wait()
                applied = await rig.kubectl(kc, "apply", "--validate=false", "-f", str(manifest))
                assert applied.returncode == 0, applied.stderr
                assert b"pod/web created" in applied.stdout
                listed = await rig.kubectl(kc, "get", "pods", "-o", "name")
                assert listed.stdout.split() == [b"pod/web"]
                deleted = await rig.kubectl(kc, "delete", "pod", "web", "--wait=false")
                assert deleted.returncode == 0, deleted.stderr
                assert b'pod "web" deleted' in deleted.stdout
            # The watch streamed both events while it was open (chunked, not buffered).
            assert b"ADDED" in watched and b"DELETED" in watched
            seen = await upstream_requests(recording_api.connection())
            changes = [r for r in seen if r["method"] in ("POST", "DELETE")]
            assert [r["method"] for r in changes] == ["POST", "DELETE"]
            for request in changes:
                headers = [(k.lower(), v) for k, v in request["headers"]]
                assert [v for k, v in headers if k == "impersonate-user"] == ["labd:admin"]
                assert [v for k, v in headers if k == "impersonate-group"] == ["system:masters"]
            entries = kube_entries(await rig.audit())
            verbs = [e["action"] for e in entries]
            assert "kube:create" in verbs and "kube:delete" in verbs and "kube:watch" in verbs
            (created,) = [e for e in entries if e["action"] == "kube:create"]
            assert created["resource"] == "cluster/home/namespace/default/pods"
            assert created["result"] == "success"
            details = created["details"]
            assert details["status"] in (200, 201)  # what the API server answered
            assert details["impersonated_groups"] == ["system:masters"]
            assert details["api_group"] == "" and details["resource"] == "pods"
            assert details["request_id"]
            (gone,) = [e for e in entries if e["action"] == "kube:delete"]
            assert gone["resource"] == "cluster/home/namespace/default/pods/web"
            async with rig.labd.client(rig.admin) as http:
                verdict = (await http.get("/api/audit/verify")).json()
            assert verdict["ok"] is True, verdict


async def test_as_flags_are_stripped_and_judged_as_the_labd_user(
    tmp_path: Path, recording_api: KubeAPI
) -> None:
    with trio.fail_after(120):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            await rig.role(
                "web-dev",
                [("allow", "kube:*", "cluster/home/*")],
                kubernetes_groups=["lab:web"],
            )
            vic = await rig.user("vic", "viewer", "web-dev")
            kc = rig.kubeconfig(vic, namespace="default")
            as_admin = ["--as=admin", "--as-group=system:masters", "--as-uid=0"]
            listed = await rig.kubectl(kc, *as_admin, "get", "pods")
            assert listed.returncode == 0, listed.stderr
            seen = await upstream_requests(recording_api.connection())
            assert seen
            for request in seen:
                headers = [(k.lower(), v) for k, v in request["headers"]]
                assert [v for k, v in headers if k == "impersonate-user"] == ["labd:vic"]
                assert [v for k, v in headers if k == "impersonate-group"] == ["lab:web"]
                assert not [k for k, _ in headers if k == "impersonate-uid"]
            # Judged as vic: a role that denies deletes wins whatever kubectl asks to be.
            async with rig.labd.client(rig.admin) as http:
                resp = await http.post(
                    "/api/roles/web-dev/rules",
                    json={"effect": "deny", "action": "kube:delete", "resource": "*"},
                )
                assert resp.status_code == 200, resp.text
            refused = await rig.kubectl(kc, *as_admin, "delete", "pod", "web", "--wait=false")
            assert refused.returncode == 1
            assert b"Error from server (Forbidden)" in refused.stderr
            assert b'"vic" may not kube:delete' in refused.stderr
            (entry,) = [e for e in await rig.audit() if e["action"] == "kube:delete"]
            assert (entry["user"], entry["result"]) == ("user/vic", "denied")


async def test_a_discovery_storm_adds_no_audit_rows(tmp_path: Path, recording_api: KubeAPI) -> None:
    with trio.fail_after(180):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            kc = rig.kubeconfig(rig.admin, namespace="default")
            before = len(await rig.audit())
            for _ in range(3):
                # A new cache each time: kubectl asks /api, /apis, /api/v1 ... every run.
                out = await rig.kubectl(kc, "api-resources", f"--cache-dir={tmp_path}/c{_}")
                assert out.returncode == 0, out.stderr
                assert b"pods" in out.stdout
            paths = [r["path"] for r in await upstream_requests(recording_api.connection())]
            assert len(paths) >= 9  # /api, /apis, /api/v1 at least, three times over
            entries = (await rig.audit())[before:]
            assert not kube_entries(entries), kube_entries(entries)
            assert rig.labd.context is not None
            metrics = rig.labd.context.metrics
            counted = metrics.kube_discovery_requests._value.get()
            assert counted >= 9


async def test_a_cluster_with_client_certificate_credentials(
    tmp_path: Path, recording_api: KubeAPI
) -> None:
    with trio.fail_after(120):
        cert_auth = recording_api.kubeconfig_text(auth="cert")
        async with proxy_rig(tmp_path, {"home": cert_auth}) as rig:
            out = await rig.kubectl(rig.kubeconfig(rig.admin), "get", "pods", "-n", "default")
            assert out.returncode == 0, out.stderr
            seen = [
                r
                for r in await upstream_requests(recording_api.connection())
                if r["path"].startswith("/api/v1/namespaces/default/pods")
            ]
            assert seen and all(r["client_cert"] for r in seen)
            assert not [k for r in seen for k, _ in r["headers"] if k.lower() == "authorization"]
