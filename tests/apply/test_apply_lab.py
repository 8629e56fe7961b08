"""labctl apply -f on the example lab of docs/apply.md (docs/examples/lab), against a real labd,
a real bastion and a Kubernetes API double (kmock): create, no-op, diff, prune, an all or
nothing failure, a conflict between two applies, and export round trips."""

from __future__ import annotations

import shutil
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import yaml

from lab.errors import NotFound
from lab.model.apps import ReleaseKey
from lab.model.declared import ObjectKey
from tests.bastion.conftest import INVENTORY, start_bastion
from tests.e2e.daemons import Daemon, clean_env, start_daemon
from tests.hub.hubtools import enroll_state
from tests.kube.kmock_server import run_kube_api
from tests.labd.harness import Credentials, RunningLabd, running_labd
from tests.servers.cli import labctl, login_env

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "lab"
MACS = ("52:54:00:00:00:01", "52:54:00:00:00:02")
SECRET = "hello-Pa55word-from-env"


async def _discover(bastion_client: object, discovery_token: str, mac: str) -> None:
    body = {**INVENTORY, "mac": mac, "nics": [{**INVENTORY["nics"][0], "mac": mac}]}
    resp = await bastion_client.post(  # type: ignore[attr-defined]
        "/api/discover", json=body, headers={"Authorization": f"Bearer {discovery_token}"}
    )
    assert resp.status_code == 200, resp.text


async def _hand_made_user(labd: RunningLabd, admin: Credentials) -> None:
    async with labd.client(admin) as http:
        resp = await http.post("/api/users", json={"name": "hank", "roles": ["viewer"]})
    assert resp.status_code == 201, resp.text


async def _stop(daemon: Daemon) -> None:
    with trio.CancelScope(shield=True):
        await daemon.stop()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


async def test_the_example_lab_applies_as_documented(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE.parent, tmp_path / "examples")  # the lab and its module
    lab = tmp_path / "examples" / "lab"
    home = tmp_path / "home"
    with trio.fail_after(240):
        async with (
            running_labd(tmp_path) as labd,
            run_kube_api(tmp_path, handler="tests.apps.kube_ssa:ApplyKubeAPI") as kube,
            trio.open_nursery() as nursery,
            AsyncExitStack() as agents,
        ):
            admin = await labd.admin()
            for name in ("web1", "web2"):  # real lab-agents, stopped first on the way out
                state = tmp_path / name
                await enroll_state(labd, admin, name, state)
                argv = [sys.executable, "-m", "lab.agent.main", "run"]
                env = clean_env(LAB_AGENT_STATE_DIR=str(state))
                agent, _ = await start_daemon(nursery, name, argv, env, tmp_path)
                agents.push_async_callback(_stop, agent)
            await _hand_made_user(labd, admin)
            async for bastion in start_bastion(nursery, tmp_path / "bastion"):
                token = await bastion.discovery_token()
                for mac in MACS:
                    await _discover(bastion.client, token, mac)
                (home / ".kube").mkdir(parents=True)
                (home / ".kube" / "lab-home.yaml").write_text(kube.kubeconfig)
                env = login_env(
                    labd,
                    admin,
                    home / "labctl",
                    HOME=str(home),
                    LABCTL_BASTION_URL=bastion.url,
                    LABCTL_BASTION_TOKEN_FILE=str(bastion.data_dir / "admin-token"),
                    HELLO_PASSWORD=SECRET,
                )
                await _walk(labd, env, lab, bastion, kube.token)
                nursery.cancel_scope.cancel()


async def _walk(
    labd: RunningLabd, env: dict[str, str], lab: Path, bastion: object, kube_token: str
) -> None:
    assert labd.context is not None
    store = labd.context.store

    # First apply creates everything.
    done = await labctl(env, "apply", "-f", str(lab), "--set", "lab")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    for line in (
        "role/web-ops created",
        "role/auditor created",
        "user/ann created",
        "user/bob created",
        "user/carol created",
        "server/web1 configured (metadata.labels.role, metadata.labels.zone)",
        "machine/node1 install queued",
        "machine/node2 unchanged (discovered, no install requested)",
        "cluster/home created",
        "app/hello installed",
    ):
        assert line in out, (line, out)
    assert (await store.servers.get_by_name("web2")).labels == {"role": "web", "zone": "b"}
    carol = await store.users.get_by_name("carol")
    assert await store.users.roles_of(carol.id) == ["auditor", "web-ops"]
    resp = await bastion.client.get(  # type: ignore[attr-defined]
        f"/api/machines/{MACS[0]}",
        headers=bastion.admin,  # type: ignore[attr-defined]
    )
    assert resp.json()["state"] == "queued" and resp.json()["hostname"] == "node1"
    assert (await labd.context.clusters.get("home")).name == "home"
    release = await labd.context.store.apps.get(
        ReleaseKey(cluster="home", namespace="web", name="hello")
    )
    assert release.status == "deployed" and release.values["password"] == "<sealed>"

    # Second apply: nothing to do; diff agrees.
    done = await labctl(env, "apply", "-f", str(lab), "--set", "lab")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 changes"
    done = await labctl(env, "diff", "-f", str(lab), "--set", "lab")
    assert (done.returncode, done.stdout) == (0, ""), done.stderr

    # One field edited: diff exits 1 and shows only it.
    _edit(lab / "roles.yaml", "Reads the audit log", "Reads the audit trail")
    done = await labctl(env, "diff", "-f", str(lab))
    assert done.returncode == 1, done.stderr
    changed = [ln for ln in done.stdout.splitlines() if ln[:1] in "+-" and ln[:3] not in "+++---"]
    assert changed == [
        "-  description: Reads the audit log and the server list.",
        "+  description: Reads the audit trail and the server list.",
    ]
    assert done.stdout.count("--- a/") == 1 and "a/role/auditor" in done.stdout

    # Prune: carol and the app leave the files; she is disabled and the app uninstalled,
    # hank (made by hand) stays enabled.
    (lab / "apps.yaml").unlink()
    text = (lab / "users.yaml").read_text()
    (lab / "users.yaml").write_text(
        text.split("---\napiVersion: lab/v1\nkind: User\nmetadata:\n  name: carol")[0]
    )
    preview = await labctl(env, "diff", "-f", str(lab), "--prune", "--set", "lab")
    assert preview.returncode == 1, preview.stderr
    assert "a/user/carol" in preview.stdout and "+  disabled: true" in preview.stdout
    assert "~ app/hello would be uninstalled" in preview.stdout.splitlines()
    done = await labctl(env, "apply", "-f", str(lab), "--prune", "--set", "lab")
    assert done.returncode == 0, done.stderr
    assert "user/carol disabled (spec.disabled)" in done.stdout.splitlines()
    assert "role/auditor configured (spec.description)" in done.stdout.splitlines()
    assert "app/hello uninstalled" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == "3 changes"
    with pytest.raises(NotFound):  # uninstalled, its history forgotten
        await labd.context.store.apps.get(ReleaseKey(cluster="home", namespace="web", name="hello"))
    assert (await store.users.get_by_name("carol")).disabled
    assert not (await store.users.get_by_name("hank")).disabled
    assert not (await store.users.get_by_name("ann")).disabled
    rows = await store.apply.inventory("lab")
    assert ObjectKey(kind="User", name="carol") not in {r.key for r in rows}

    # The app's password came from the environment: sealed, never in clear in the database.
    for path in labd.data_dir.glob("labd.db*"):
        assert SECRET.encode() not in path.read_bytes(), path
        assert kube_token.encode() not in path.read_bytes(), path
    entries = await store.audit.list(limit=10_000)
    assert all(SECRET not in str(e.details) for e in entries)

    # Export of every labd kind applies unchanged.
    exports = (("roles", "web-ops"), ("users", "ann"), ("servers", "web1"), ("clusters", "home"))

    async def round_trip(kind: str, name: str) -> None:
        exported = await labctl(env, "get", kind, name, "-o", "yaml")
        assert exported.returncode == 0, exported.stderr
        (doc,) = yaml.safe_load_all(exported.stdout)
        assert doc["metadata"]["name"] == name
        if kind != "clusters":  # labd's own objects carry their version
            assert doc["metadata"]["resourceVersion"]
        target = lab.parent / f"export-{kind}.yaml"  # beside the lab, not in it
        target.write_text(exported.stdout)
        done = await labctl(env, "apply", "-f", str(target))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "0 changes", (kind, done.stdout)

    async with trio.open_nursery() as nursery:  # independent: side by side
        for kind, name in exports:
            nursery.start_soon(round_trip, kind, name)

    # Someone changes the role by another path: the export is stale. apply refuses it naming
    # the field that moved; diff exits above 1 (an error, not "changes").
    exported_role = lab.parent / "export-roles.yaml"
    _edit(exported_role, "Runs the web servers.", "Runs web.")
    added = await labctl(env, "roles", "allow", "web-ops", "logs:*", "server/db*")
    assert added.returncode == 0, added.stderr
    done = await labctl(env, "apply", "-f", str(exported_role))
    assert done.returncode == 1, done.stdout
    assert "role/web-ops changed since resourceVersion" in done.stderr
    assert "spec.rules moved" in done.stderr
    done = await labctl(env, "diff", "-f", str(exported_role))
    assert done.returncode > 1, done.stdout
    done = await labctl(env, "apply", "-f", str(exported_role), "--force-conflicts")
    assert done.returncode == 0, done.stderr
    assert "role/web-ops configured (spec.description, spec.rules)" in done.stdout

    # A machine already queued keeps its host name and role: changing them is a reprovision.
    _edit(lab / "machines.yaml", "role: worker", "role: infra")
    done = await labctl(env, "apply", "-f", str(lab / "machines.yaml"))
    assert done.returncode == 1, done.stdout
    assert "change only by a reprovision" in done.stderr
