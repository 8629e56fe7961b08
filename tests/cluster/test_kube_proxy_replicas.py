"""Any labd replica serves any cluster through /k8s: the kubeconfig imported on one replica is
in the shared store, and a user's kubectl works through the other."""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab import pki
from tests.cluster.rig import ClusterRig
from tests.kubeproxy.rig import requires_kubectl
from tests.smoke.smoke import LABCTL, clean_env

pytestmark = requires_kubectl

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
POD = """\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec: {containers: [{name: web, image: nginx}]}
"""


def start_kmock(rig: ClusterRig, workdir: Path) -> str:
    """kmock (made kubectl-ready) as a daemon of the rig; its kubeconfig text."""
    ca = pki.create_ca("replica test cluster CA")
    key = pki.generate_key()
    cert, _ = pki.issue_server_cert(ca, pki.make_csr(key, "kmock"))
    (workdir / "kmock.pem").write_bytes(cert)
    (workdir / "kmock-key.pem").write_bytes(key)
    token = secrets.token_hex(16)
    argv = [
        sys.executable, "-m", "tests.kube.kmock_app",
        "--cert", str(workdir / "kmock.pem"), "--key", str(workdir / "kmock-key.pem"),
        f"--token={token}", "--handler", "tests.kubeproxy.recording:KubectlKubeAPI",
    ]  # fmt: skip
    url = rig.daemons.start("kmock", argv, clean_env(PYTHONPATH=str(ROOT)))
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "k",
                "cluster": {
                    "server": url,
                    "certificate-authority-data": base64.b64encode(ca.cert_pem()).decode(),
                },
            }
        ],
        "users": [{"name": "k", "user": {"token": token}}],
        "contexts": [{"name": "k", "context": {"cluster": "k", "user": "k"}}],
        "current-context": "k",
    }
    return str(yaml.safe_dump(doc))


def test_a_cluster_imported_on_one_replica_is_served_by_the_other(
    rig: ClusterRig, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "home.kubeconfig"
    kubeconfig.write_text(start_kmock(rig, tmp_path))
    rig.start_replica("a")
    rig.start_replica("b")
    rig.login("a")
    rig.labctl("clusters", "import", "home", "--kubeconfig", str(kubeconfig), on="a")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD)

    def kubectl(on: str, *args: str) -> str:
        done = rig.run([*LABCTL, "kubectl", "home", "--", *args], rig.env(on))
        return done.stdout + done.stderr

    applied = kubectl("b", "apply", "--validate=false", "-f", str(manifest))
    assert "pod/web created" in applied
    assert kubectl("a", "get", "pods", "-n", "default", "-o", "name").split() == ["pod/web"]
    entries = rig.labctl_json("get", "audit", "--action", "kube:create")
    assert [e["resource"] for e in entries] == ["cluster/home/namespace/default/pods"]
    verify = rig.labctl_json("audit", "verify", on="b")
    assert verify["ok"], verify


def test_a_role_change_on_one_replica_reaches_the_proxy_of_the_other(
    rig: ClusterRig, tmp_path: Path
) -> None:
    """The roles each replica keeps for the proxy last an hour here: only the change counter
    (polled every second) can make replica b see a deny rule given to the user on replica a."""
    kubeconfig = tmp_path / "home.kubeconfig"
    kubeconfig.write_text(start_kmock(rig, tmp_path))
    for name in ("a", "b"):
        rig.start_replica(name, LABD_ROLE_CACHE_TTL="3600")
    rig.login("a")
    rig.labctl("clusters", "import", "home", "--kubeconfig", str(kubeconfig), on="a")

    def kubectl_on_b() -> subprocess.CompletedProcess[str]:
        argv = [*LABCTL, "kubectl", "home", "--", "get", "pods", "-n", "default", "-o", "name"]
        return rig.run(argv, rig.env("b"), expect=None)

    assert kubectl_on_b().returncode == 0  # b now keeps the admin's roles
    rig.labctl("roles", "create", "nokube", on="a")
    rig.labctl("roles", "deny", "nokube", "kube:list", "cluster/home/*", on="a")
    rig.labctl("users", "grant", "admin", "--role", "nokube", on="a")

    def refused() -> str | None:
        done = kubectl_on_b()
        return done.stderr if done.returncode != 0 else None

    message = rig.wait_for("replica b to refuse the list", refused, timeout=60)
    assert "Forbidden" in message and "kube:list" in message, message
