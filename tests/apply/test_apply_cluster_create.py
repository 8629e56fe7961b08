"""A Cluster document with a create spec goes through labd's create operation (as labctl
clusters create); an existing cluster is left alone; the datastore URL is a reference."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.labd.harness import running_labd
from tests.servers.cli import labctl, login_env

DOC = """\
apiVersion: lab/v1
kind: Cluster
metadata: {name: prod}
spec:
  create:
    servers: [k1]
"""


async def test_a_create_spec_starts_the_create_operation_once(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            admin = await labd.admin()
            await labd.enroll_agent("k1", await labd.create_token(admin, "agent"))
            env = login_env(labd, admin, tmp_path / "home")
            lab = tmp_path / "lab"
            lab.mkdir()
            (lab / "cluster.yaml").write_text(DOC)
            done = await labctl(env, "apply", "-f", str(lab), "--set", "lab")
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines()[0].startswith("cluster/prod create started (operation")
            (op,) = await labd.context.store.cluster_ops.list(cluster="prod")
            assert op.kind == "create"
            done = await labctl(env, "apply", "-f", str(lab), "--set", "lab")
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == ["cluster/prod unchanged", "0 changes"]
            assert len(await labd.context.store.cluster_ops.list(cluster="prod")) == 1

            # An external datastore's URL holds a password: only by reference, read here.
            (lab / "cluster.yaml").write_text(
                DOC.replace("prod", "other") + "    datastore: postgres://k3s:pw@db:5432/k3s\n"
            )
            done = await labctl(env, "apply", "-f", str(lab))
            assert done.returncode == 2
            assert "document 0: spec.create.datastore" in done.stderr
