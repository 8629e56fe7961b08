"""What the app tests share: a labd that knows the kmock cluster, a test module, requests."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from lab.modules import Module, load_directory
from tests.kube.kmock_server import KubeAPI
from tests.labd.harness import Credentials, RunningLabd

SECRET = "s3cret-Pa55word-never-stored"

MODULE_YAML = """\
name: web
version: 1.0.0
parameters:
  type: object
  additionalProperties: false
  properties:
    replicas: {type: integer, minimum: 1, default: 1}
    password: {type: string, minLength: 8, secret: true}
    legacy: {type: boolean, default: true}
    extra: {type: boolean, default: false}
    canary: {type: boolean, default: false}
    reject: {type: boolean, default: false}
    keep_data: {type: boolean, default: true}
    never_ready: {type: boolean, default: false}
  required: [password]
data:
  - {kind: PersistentVolumeClaim, name: "*-data"}
hooks:
  pre-upgrade: [templates/hooks/backup.yaml]
  pre-rollback: [templates/hooks/backup.yaml]
  pre-uninstall: [templates/hooks/backup.yaml]
"""

TEMPLATES = {
    "hooks/backup.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ release.name }}-backup-{{ release.revision }}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: backup, image: "busybox:1.36", command: [/bin/true]}]
""",
    "auth.yaml": """\
apiVersion: v1
kind: Secret
metadata:
  name: {{ release.name }}-auth
stringData:
  password: {{ values.password }}
""",
    "legacy.yaml": """\
{% if values.legacy %}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ release.name }}-legacy
data: {a: "1"}
{% endif %}
""",
    "extra.yaml": """\
{% if values.extra %}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ release.name }}-extra
data: {b: "2"}
{% endif %}
""",
    "m-canary.yaml": """\
{% if values.canary %}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ release.name }}-canary
data: {c: "3"}
{% endif %}
""",
    "z-rejected.yaml": """\
{% if values.reject %}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ release.name }}-bad
  annotations:
    test.labctl/reject: "data.x: Invalid value: the upstream refuses this object"
data: {x: "4"}
{% endif %}
""",
    "pvc.yaml": """\
{% if values.keep_data %}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ release.name }}-data
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
{% endif %}
""",
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ release.name }}
{% if values.never_ready %}
  annotations: {test.labctl/never-ready: "yes"}
{% endif %}
spec:
  replicas: {{ values.replicas }}
  selector: {matchLabels: {app: {{ release.name }}}}
  template:
    metadata: {labels: {app: {{ release.name }}}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
""",
}


def write_module(root: Path) -> Module:
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "module.yaml").write_text(MODULE_YAML)
    for name, text in TEMPLATES.items():
        (root / "templates" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "templates" / name).write_text(text)
    return load_directory(root)


def module_body(module: Module) -> dict[str, str]:
    return {"archive": base64.b64encode(module.archive()).decode(), "sha256": module.digest}


async def import_cluster(labd: RunningLabd, admin: Credentials, name: str, api: KubeAPI) -> None:
    """The cluster as labd knows it after ``labctl clusters import``."""
    async with labd.client(admin) as http:
        resp = await http.post(
            "/api/clusters/import", json={"name": name, "kubeconfig": api.kubeconfig}
        )
    assert resp.status_code in (200, 201), resp.text


class Apps:
    """Requests to /api/apps for one release."""

    def __init__(self, http: httpx.AsyncClient, cluster: str, namespace: str, name: str) -> None:
        self.http = http
        self.base = f"/api/apps/{cluster}/{namespace}/{name}"

    async def post(self, verb: str, **payload: Any) -> httpx.Response:
        return await self.http.post(f"{self.base}/{verb}", json=payload, timeout=60)

    async def history(self) -> list[dict[str, Any]]:
        resp = await self.http.get(f"{self.base}/history")
        assert resp.status_code == 200, resp.text
        items: list[dict[str, Any]] = resp.json()["items"]
        return items
