"""labctl clusters import against kmock, then labctl get clusters shows it Ready; describe,
the kubeconfig read back, NotReady and unreachable clusters, refused imports; and the
kubeconfig's token and key in no log record, audit entry, -o json answer or database byte."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from lab.kube import KubeClient, load_kubeconfig
from tests.kube.kmock_server import KubeAPI
from tests.labd.harness import RunningLabd, running_labd


def labctl_env(labd: RunningLabd, admin: Any, home: Path) -> dict[str, str]:
    save_credentials(
        home, CliCredentials(ca_pem=labd.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem)
    )
    return {
        **os.environ,
        "LABCTL_HOME": str(home),
        "LABCTL_CONFIG": str(home / "config.yaml"),
        "LABCTL_SERVER": labd.url,
    }


async def labctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def secrets_of(api: KubeAPI) -> list[str]:
    """What must never leak: the token, the client key (PEM and its base64 line)."""
    key_b64 = yaml.safe_load(api.kubeconfig_text(auth="cert"))["users"][0]["user"][
        "client-key-data"
    ]
    return [api.token, key_b64, api.client_key_pem.decode().splitlines()[1]]


async def test_import_then_get_clusters_shows_it_ready(
    tmp_path: Path, kube_api: KubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    files = tmp_path / "kube"
    files.mkdir()
    # Files beside the kubeconfig (CA, client cert and key): labctl inlines them.
    config = files / "config"
    config.write_text(kube_api.kubeconfig_text(auth="cert", inline=False, files_dir=files))
    token_config = tmp_path / "token.yaml"
    token_config.write_text(kube_api.kubeconfig)
    outputs: list[str] = []
    with trio.fail_after(180):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            env = labctl_env(labd, admin, tmp_path / "home")

            done = await labctl(env, "clusters", "import", "lab", "--kubeconfig", str(config))
            assert done.returncode == 0, done.stderr
            assert f"cluster/lab imported: {kube_api.version} at {kube_api.url}" in done.stdout
            done2 = await labctl(
                env, "clusters", "import", "lab-token", "--kubeconfig", str(token_config),
                "--context", "kmock", "-o", "json",
            )  # fmt: skip
            assert done2.returncode == 0, done2.stderr
            assert json.loads(done2.stdout)["origin"] == "imported"

            table = await labctl(env, "get", "clusters")
            assert table.returncode == 0, table.stderr
            rows = [line.split() for line in table.stdout.splitlines()]
            assert rows[0][:5] == ["NAME", "READY", "VERSION", "NODES", "ORIGIN"]
            assert rows[1][:5] == ["lab", "Ready", kube_api.version, "1/1", "imported"]
            assert rows[2][:2] == ["lab-token", "Ready"]

            as_json = await labctl(env, "get", "clusters", "-o", "json")
            items = json.loads(as_json.stdout)
            assert [i["health"]["state"] for i in items] == ["Ready", "Ready"]
            described = await labctl(env, "describe", "cluster/lab")
            assert "Ready:      Ready" in described.stdout, described.stdout
            as_yaml = await labctl(env, "describe", "cluster/lab", "-o", "yaml")
            wide = await labctl(env, "get", "clusters", "-o", "wide")
            assert kube_api.url in wide.stdout
            outputs += [done.stdout, done2.stdout, table.stdout, as_json.stdout]
            outputs += [described.stdout, as_yaml.stdout, wide.stdout]
            outputs += [r.stderr for r in (done, done2, table, as_json, described, wide)]

            # The kubeconfig comes back only through its own route, to a 0600 file.
            target = tmp_path / "lab.yaml"
            creds = await labctl(env, "clusters", "kubeconfig", "lab", "--file", str(target))
            assert creds.returncode == 0, creds.stderr
            assert target.stat().st_mode & 0o777 == 0o600
            conn = load_kubeconfig(target.read_text())
            assert conn.client_key_pem == kube_api.client_key_pem
            async with KubeClient(conn) as kube:
                assert (await kube.version())["gitVersion"] == kube_api.version
            # labd's own connection to the cluster.
            registry = labd.context.clusters
            assert (await registry.connection("lab-token")).token == kube_api.token

            entries = await labd.context.store.audit.list()
            read = [e for e in entries if e.action == "clusters:read-credentials"]
            assert [(e.user, e.result, e.resource) for e in read] == [
                ("user/admin", "success", "cluster/lab")
            ]
            imported = [e for e in entries if e.action == "clusters:import"]
            # One entry per import (committed with the write, with the answer's 201).
            assert sorted((e.resource, e.details["status"]) for e in imported) == [
                ("cluster/lab", 201),
                ("cluster/lab-token", 201),
            ]
            audit_text = json.dumps([e.details for e in entries]) + str(entries)
        database = b"".join(p.read_bytes() for p in sorted(labd.data_dir.glob("labd.db*")))
    logs = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in secrets_of(kube_api):
        assert secret not in logs
        assert secret not in audit_text
        assert secret.encode() not in database
        for out in outputs:
            assert secret not in out


async def test_a_node_not_ready_and_an_api_server_gone(tmp_path: Path, kube_api: KubeAPI) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                resp = await http.post(
                    "/api/clusters/import", json={"name": "lab", "kubeconfig": kube_api.kubeconfig}
                )
                assert resp.status_code == 201, resp.text
                async with KubeClient(kube_api.connection()) as kube:
                    await kube.request(
                        "PATCH",
                        "/api/v1/nodes/node-1",
                        json={"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                        headers={"Content-Type": "application/merge-patch+json"},
                    )
                health = (await http.get("/api/clusters/lab")).json()["health"]
                assert (health["state"], health["nodes"], health["nodes_ready"]) == (
                    "NotReady",
                    1,
                    0,
                )
                await kube_api.daemon.stop()
                health = (await http.get("/api/clusters/lab")).json()["health"]
                assert health["state"] == "Unreachable" and not health["ready"]
                stored = (await http.get("/api/clusters/lab?live=false")).json()
                assert "health" not in stored and stored["status"] == "ready"
                # An API server that does not answer cannot be imported.
                again = await http.post(
                    "/api/clusters/import", json={"name": "gone", "kubeconfig": kube_api.kubeconfig}
                )
                assert again.status_code == 503, again.text
                assert again.json()["error"]["details"]["reason"] == "cluster_unreachable"
                assert (await http.get("/api/clusters/gone")).status_code == 404


async def test_refused_imports_store_nothing(tmp_path: Path, kube_api: KubeAPI) -> None:
    wrong_token = kube_api.kubeconfig.replace(kube_api.token, "not-the-token")
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            async with labd.client(admin) as http:

                async def post(body: dict[str, Any]) -> Any:
                    resp = await http.post("/api/clusters/import", json=body)
                    return resp.status_code, resp.json()

                status, answer = await post({"name": "lab", "kubeconfig": wrong_token})
                assert status == 400
                assert answer["error"]["details"]["reason"] == "credentials_refused"
                assert "not-the-token" not in json.dumps(answer)
                status, answer = await post({"name": "Bad_Name", "kubeconfig": "x"})
                assert (status, answer["error"]["details"]["fields"]) == (400, ["body.name"])
                status, answer = await post({"name": "lab", "kubeconfig": "users: 3"})
                assert status == 400
                status, answer = await post(
                    {"name": "lab", "kubeconfig": kube_api.kubeconfig, "context": "nope"}
                )
                assert (status, answer["error"]["details"]["fields"]) == (
                    400,
                    ["kubeconfig.contexts"],
                )
                status, answer = await post({"name": "lab", "kubeconfig": 42})
                assert status == 400
                assert await labd.context.clusters.list() == []
                assert await labd.context.secrets.names() == []

                status, _ = await post({"name": "lab", "kubeconfig": kube_api.kubeconfig})
                assert status == 201
                status, answer = await post({"name": "lab", "kubeconfig": kube_api.kubeconfig})
                assert status == 409

                gone = await http.delete("/api/clusters/lab")
                assert gone.status_code == 200, gone.text
                assert await labd.context.secrets.names() == []
                assert (await http.get("/api/clusters/lab/kubeconfig")).status_code == 404


def test_clusters_import_keeps_its_own_context_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.cli.main import take_context

    # set then deleted: monkeypatch restores the variable's original state afterwards
    monkeypatch.setenv("LABCTL_CONTEXT", "")
    monkeypatch.delenv("LABCTL_CONTEXT")
    argv = ["clusters", "import", "lab", "--kubeconfig", "f", "--context", "admin@lab"]
    assert take_context(list(argv)) == argv
    assert "LABCTL_CONTEXT" not in os.environ
    assert take_context(["--context", "home", *argv]) == argv
    assert os.environ["LABCTL_CONTEXT"] == "home"
    assert take_context(["get", "clusters", "--context", "other"]) == ["get", "clusters"]
    assert os.environ["LABCTL_CONTEXT"] == "other"
