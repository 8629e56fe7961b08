"""labctl apps and get apps as a user runs them (real labctl processes, a real labd, kmock):
the docs/apps.md walk with cockroachdb, then a module directory's diff, uninstall and history."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import trio
from cryptography import x509

from lab.kube import KubeClient
from tests.apps.rig import SECRET, write_module
from tests.cluster_registry.test_import import labctl, labctl_env
from tests.kube.kmock_server import KubeAPI
from tests.labd.harness import running_labd


async def test_apps_commands(tmp_path: Path, kube_ssa: KubeAPI) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kube_ssa.kubeconfig)
    source = tmp_path / "web"
    write_module(source)
    where = ["--cluster", "home", "-n", "db"]
    shop = ["--cluster", "home", "-n", "shop", "--module", str(source)]
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            env = labctl_env(labd, await labd.admin(), tmp_path / "home")
            done = await labctl(env, "clusters", "import", "home", "--kubeconfig", str(kubeconfig))
            assert done.returncode == 0, done.stderr

            # docs/apps.md's walk: cockroachdb installed, upgraded, rolled back.
            # No TLS values: labd issues the node and root certificates from its CA.
            installed = await labctl(
                env, "apps", "install", "crdb", "--module", "cockroachdb", *where,
                "--wait", "--timeout", "30s",
            )  # fmt: skip
            assert installed.returncode == 0, installed.stderr
            assert installed.stdout.startswith("crdb: revision 1 deployed (cockroachdb@1.0.0")
            async with KubeClient(kube_ssa.connection()) as client:
                secret = await client.get("/api/v1/namespaces/db/secrets/crdb-node-tls")
            node = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["node.crt"]))
            labd_ca = x509.load_pem_x509_certificate(labd.ca_pem())
            assert node.issuer == labd_ca.subject
            node.verify_directly_issued_by(labd_ca)
            assert node.subject.rfc4514_string() == "CN=node"
            sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert "*.crdb.db.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)
            assert labd.context is not None
            recorded = await labd.context.store.certificates.list()
            assert {"service/home/db/crdb/node", "service/home/db/crdb/root"} <= {
                c.subject for c in recorded
            }
            upgraded = await labctl(
                env, "apps", "upgrade", "crdb", "--module", "cockroachdb@1.0.0", *where,
                "--reuse-values", "--set", "replicas=5", "--wait",
            )  # fmt: skip
            assert upgraded.returncode == 0, upgraded.stderr
            status = await labctl(env, "apps", "status", "crdb", *where, "-o", "json")
            assert json.loads(status.stdout)["values"]["replicas"] == 5
            assert json.loads(status.stdout)["values"]["tls"]["node_key"] == "<sealed>"
            back = await labctl(env, "apps", "rollback", "crdb", "1", *where)
            assert back.returncode == 0, back.stderr
            assert "revision 3 deployed" in back.stdout and "rollback to 1" in back.stdout
            history = await labctl(env, "apps", "history", "crdb", *where)
            rows = [line.split()[:3] for line in history.stdout.splitlines()]
            assert rows == [
                ["REVISION", "STATUS", "OPERATION"],
                ["1", "superseded", "install"],
                ["2", "superseded", "upgrade"],
                ["3", "deployed", "rollback"],
            ]
            # labd on that CockroachDB: its root client certificate comes from labd's CA too.
            on_crdb = await labctl(
                env, "apps", "install", "labd", "--module", "labd", "--cluster", "home",
                "-n", "labctl", "--set", "ca_passphrase=" + "p" * 24,
            )  # fmt: skip
            assert on_crdb.returncode == 0, on_crdb.stderr
            async with KubeClient(kube_ssa.connection()) as client:
                db_tls = await client.get("/api/v1/namespaces/labctl/secrets/labd-db-tls")
            root = x509.load_pem_x509_certificate(base64.b64decode(db_tls["data"]["client.crt"]))
            root.verify_directly_issued_by(labd_ca)
            assert root.subject.rfc4514_string() == "CN=root"
            missing = await labctl(
                env, "apps", "install", "x", "--module", "cockroachdb@9.9.9", *where
            )
            assert missing.returncode == 4
            assert "module cockroachdb has no version 9.9.9" in missing.stderr

            # A module directory: diff (Secret values redacted), uninstall keeping history.
            ok = await labctl(env, "apps", "install", "web", *shop, "--set", f"password={SECRET}")
            assert ok.returncode == 0, ok.stderr
            listed = await labctl(env, "get", "apps", "-o", "name")
            assert listed.stdout.split() == ["app/crdb", "app/labd", "app/web"]
            diff = await labctl(
                env, "apps", "diff", "web", *shop, "--reuse-values", "--set", "legacy=false"
            )
            assert diff.returncode == 1, diff.stderr
            assert "-  name: web-legacy" in diff.stdout
            assert SECRET not in diff.stdout and "<sealed>" in diff.stdout
            # Without --module: the release's own module, which labd kept.
            own = await labctl(
                env, "apps", "diff", "web", *shop[:4], "--reuse-values", "--set", "extra=true"
            )
            assert own.returncode == 1, own.stderr
            assert "+  name: web-extra" in own.stdout
            gone = await labctl(env, "apps", "uninstall", "web", *shop[:4], "--keep-history")
            assert gone.returncode == 0, gone.stderr
            assert "kept PersistentVolumeClaim/shop/web-data (data)" in gone.stdout
            again = await labctl(
                env, "apps", "install", "web", *shop, "--set", f"password={SECRET}"
            )
            assert again.returncode == 0, again.stderr
            assert again.stdout.startswith("web: revision 2 deployed")
            history = await labctl(env, "apps", "history", "web", *shop[:4], "-o", "json")
            items = json.loads(history.stdout)
            assert [(i["revision"], i["status"]) for i in items] == [
                (1, "uninstalled"),
                (2, "deployed"),
            ]
            assert SECRET not in history.stdout
