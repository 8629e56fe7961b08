"""labctl kubeconfig and labctl kubectl, as a logged-in user would run them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio
import yaml

from tests.kube.kmock_server import KubeAPI
from tests.kubeproxy.rig import proxy_rig, requires_kubectl
from tests.rbac.test_cli import login


async def labctl(*args: str, home: Path, env: dict[str, str] | None = None) -> trio.Process:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "KUBECONFIG"))}
    environ |= {"LABCTL_HOME": str(home), "HOME": str(home), **(env or {})}
    done: trio.Process = await trio.run_process(
        [sys.executable, "-m", "lab.cli.main", *args],
        env=environ,
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done


@requires_kubectl
async def test_kubeconfig_and_kubectl_reach_the_cluster_as_the_user(
    tmp_path: Path, recording_api: KubeAPI
) -> None:
    with trio.fail_after(180):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            async with rig.labd.client(rig.admin) as http:
                resp = await http.post("/api/users", json={"name": "vic", "roles": ["viewer"]})
                assert resp.status_code == 201, resp.text
                token = resp.json()["token"]
            home = tmp_path / "vic-home"
            home.mkdir()
            await login(rig.labd, home, "vic", token)

            printed = await labctl("kubeconfig", "home", "-n", "prod", home=home)
            assert printed.returncode == 0, printed.stderr
            doc = yaml.safe_load(printed.stdout)
            (cluster,) = doc["clusters"]
            assert cluster["cluster"]["server"] == f"{rig.labd.url}/k8s/home"
            (user,) = doc["users"]
            assert set(user["user"]) == {"client-certificate", "client-key"}
            assert Path(user["user"]["client-key"]).read_bytes().startswith(b"-----BEGIN")
            assert doc["contexts"][0]["context"]["namespace"] == "prod"
            assert recording_api.token.encode() not in printed.stdout
            assert b"-----BEGIN" not in printed.stdout  # file names, never key material

            # --merge keeps what the file held and switches to the new context.
            kube_dir = home / ".kube"
            kube_dir.mkdir()
            other = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "other", "cluster": {"server": "https://x"}}],
                "users": [{"name": "other", "user": {"token": "t"}}],
                "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
                "current-context": "other",
            }
            (kube_dir / "config").write_text(yaml.safe_dump(other))
            merged = await labctl("kubeconfig", "home", "--merge", home=home)
            assert merged.returncode == 0, merged.stderr
            after = yaml.safe_load((kube_dir / "config").read_text())
            assert after["current-context"] == "lab-home"
            assert [c["name"] for c in after["contexts"]] == ["other", "lab-home"]
            assert (kube_dir / "config").stat().st_mode & 0o077 == 0

            ran = await labctl("kubectl", "home", "--", "get", "pods", "-n", "default", home=home)
            assert ran.returncode == 0, ran.stderr
            assert b"No resources found in default namespace" in ran.stderr
            refused = await labctl(
                "kubectl", "home", "--", "delete", "pod", "web", "--wait=false", home=home
            )
            assert refused.returncode == 1
            assert b"Error from server (Forbidden)" in refused.stderr

            can_i = await labctl(
                "auth", "can-i", "kube:delete", "cluster/home/namespace/prod/pods/x", home=home
            )
            assert (can_i.returncode, can_i.stdout.split()[0]) == (3, b"no")
            can_list = await labctl(
                "auth", "can-i", "kube:list", "cluster/home/namespace/prod/pods", home=home
            )
            assert (can_list.returncode, can_list.stdout.strip()) == (0, b"yes")
            entries = await rig.audit(user="user/vic")
            assert {
                (e["action"], e["result"]) for e in entries if e["action"].startswith("kube:")
            } >= {
                ("kube:list", "success"),
                ("kube:delete", "denied"),
            }


async def test_a_bad_cluster_name_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    done = await labctl("kubeconfig", "../etc", home=home)
    assert done.returncode != 0
    assert b"is not a cluster name" in done.stderr
