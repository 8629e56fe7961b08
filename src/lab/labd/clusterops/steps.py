"""The steps of cluster operations, each run on one node through its agent (or on the whole
cluster), idempotent so that a resumed operation may run a step again.

A step raises a :class:`lab.errors.LabError` whose message names the node and what failed;
the engine records it on the step and stops the operation there.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio
import yaml
from attrs import define, evolve, field

from lab import pki
from lab.errors import Invalid, NotFound, Unavailable
from lab.kube import KubeClient, KubeConnection, dump_kubeconfig, load_kubeconfig
from lab.labd.audit.entries import record
from lab.labd.clusterops import registry
from lab.labd.clusterops.node import NodeShell, StepFailed
from lab.labd.clusterops.plan import ClusterSpec
from lab.labd.clusterops.render import NodePaths, render_config, render_unit, unit_name
from lab.labd.clusterops.token import JoinToken, ca_matches, make_token, parse_token
from lab.labd.clusterops.transfer import Sent, file_sha256, stage_artifact

if TYPE_CHECKING:
    from lab.labd.context import LabdContext

ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
ARCHES |= {"armv7l": "arm", "armhf": "arm", "s390x": "s390x"}
KUBELET_PORT = 10250
ETCD_PORTS = (2379, 2380)
MIN_DISK_KIB = 2 * 1024 * 1024
MAX_CLOCK_SKEW = 10.0
K3S_ARTIFACT = "k3s"
IMAGES_ARTIFACT = "k3s-airgap-images"


@define(kw_only=True)
class OpContext:
    """What the steps of one running operation share."""

    context: LabdContext
    spec: ClusterSpec
    params: dict[str, Any]
    requested_by: str = ""
    _kube: KubeConnection | None = field(default=None, alias="kube")

    def shell(self, node: str) -> NodeShell:
        config = self.context.config
        root = config.cluster_node_root.replace("{node}", node) or "/"
        exec_path = config.cluster_exec_path.replace("{node}", node)
        return NodeShell(self.context, node, exec_path=exec_path, paths=NodePaths(root=root))

    @property
    def name(self) -> str:
        return self.spec.name

    async def token(self) -> JoinToken:
        raw = await self.context.secrets.get(registry.secret_name(self.name, "token"))
        return parse_token(raw.decode())

    async def ca(self) -> tuple[bytes, bytes]:
        raw = await self.context.secrets.get(registry.secret_name(self.name, "ca"))
        data = json.loads(raw)
        return data["cert"].encode(), data["key"].encode()

    def remember(self, conn: KubeConnection) -> None:
        """The cluster's connection, as just stored sealed (the kubeconfig step)."""
        self._kube = conn

    async def kube(self) -> KubeConnection:
        if self._kube is None:
            raw = await self.context.secrets.get(registry.secret_name(self.name, "kubeconfig"))
            self._kube = load_kubeconfig(raw.decode())
        return self._kube


Step = Callable[[OpContext, str], Coroutine[Any, Any, None]]


# --- preflight -------------------------------------------------------------------------------


async def preflight(op: OpContext, node: str) -> list[str]:
    """Every problem that would stop k3s on ``node``; changes nothing there."""
    sh = op.shell(node)
    problems: list[str] = []
    machine = (await sh.check(["uname", "-m"])).text.strip()
    arch = ARCHES.get(machine, machine)
    try:
        await op.context.artifacts.find(K3S_ARTIFACT, op.spec.version, arch)
    except NotFound:
        problems.append(
            f"no k3s {op.spec.version} for {arch} (labctl artifacts add FILE --name k3s"
            f" --version {op.spec.version} --arch {arch})"
        )
    route = await sh.run(["ip", "-o", "route", "show", "default"])
    if route.code != 0 or not route.text.strip():
        problems.append("no default route (k3s needs one, even air-gapped: add a dummy one)")
    problems += await _ports(op, sh, node)
    problems += await _selinux(sh)
    problems += await _foreign(op, sh)
    remote = await sh.run(["date", "+%s"])
    try:
        skew = abs(float(remote.text.strip()) - datetime.now(UTC).timestamp())
    except ValueError:
        problems.append("could not read its clock (date +%s)")
    else:
        if skew > MAX_CLOCK_SKEW:
            problems.append(f"clock is {skew:.0f}s off labd's (etcd and TLS need synced clocks)")
    df = await sh.run(["df", "-Pk", sh.paths.root])
    try:
        avail = int(df.text.splitlines()[-1].split()[3])
    except (IndexError, ValueError):
        problems.append(f"could not read free disk space under {sh.paths.root}")
    else:
        if avail < MIN_DISK_KIB:
            problems.append(f"only {avail // 1024} MiB free under {sh.paths.root} (2 GiB needed)")
    return [f"server/{node}: {p}" for p in problems]


async def _ports(op: OpContext, sh: NodeShell, node: str) -> list[str]:
    wanted = [KUBELET_PORT]
    if op.spec.role(node) == "server":
        wanted.append(op.spec.api_port)
        if op.spec.datastore == "embedded-etcd":
            wanted += ETCD_PORTS
    listening = await sh.check(["ss", "-Hltn"])
    used: set[int] = set()
    for line in listening.text.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            port = cols[3].rpartition(":")[2]
            if port.isdigit():
                used.add(int(port))
    return [f"port {p} is in use" for p in wanted if p in used]


async def _foreign(op: OpContext, sh: NodeShell) -> list[str]:
    """A node that already runs k3s for another cluster (its config holds a token for
    another CA) is not taken over: its config would be overwritten."""
    if (await sh.run(["test", "-e", sh.paths.config])).code != 0:
        return []
    ran = await sh.run(["cat", sh.paths.config])
    try:
        theirs = parse_token(str((yaml.safe_load(ran.out) or {}).get("token", "")))
    except (yaml.YAMLError, AttributeError, Invalid):
        theirs = None
    try:
        ours = await op.token()
    except NotFound:
        ours = None  # this cluster has no CA yet: any k3s config there is another's
    if theirs is not None and ours is not None and theirs.ca_hash == ours.ca_hash:
        return []
    return [
        f"{sh.paths.config} is another k3s cluster's: remove that cluster from the node"
        " first (labctl clusters remove-node, or k3s-uninstall.sh)"
    ]


async def _selinux(sh: NodeShell) -> list[str]:
    try:
        mode = await sh.run(["getenforce"])
    except StepFailed:
        return []  # no SELinux tools: not an SELinux system
    if mode.code != 0 or mode.text.strip() != "Enforcing":
        return []
    policy = await sh.run(["rpm", "-q", "k3s-selinux"])
    if policy.code != 0:
        return ["SELinux is enforcing but k3s-selinux is not installed"]
    return []


# --- credentials -----------------------------------------------------------------------------


async def credentials(op: OpContext, node: str) -> None:
    """The cluster CA and the secure join token, made once by labd and kept sealed."""
    store = op.context.secrets
    try:
        await op.token()
        await op.ca()
        return  # a resumed create keeps what it made
    except NotFound:
        pass
    ca = pki.create_ca(f"k3s-server-ca@{op.name}")
    cert, key = ca.cert_pem(), ca.key_pem()
    await store.put(
        registry.secret_name(op.name, "ca"),
        json.dumps({"cert": cert.decode(), "key": key.decode()}).encode(),
    )
    await store.put(registry.secret_name(op.name, "token"), str(make_token(cert)).encode())


# --- node steps ------------------------------------------------------------------------------


async def _arch(sh: NodeShell) -> str:
    machine = (await sh.check(["uname", "-m"])).text.strip()
    return ARCHES.get(machine, machine)


async def _audit_sent(op: OpContext, sent: Sent) -> None:
    """What labd sent of an artifact to a node: from which offset, how many bytes."""
    ref = sent.artifact
    await record(
        op.context,
        action="artifacts:read",
        resource=f"artifact/{ref.name}",
        result="success" if sent.ok else "error",
        user=op.requested_by,
        details={
            "cluster": op.name,
            "node": sent.node,
            "version": ref.version,
            "arch": ref.arch,
            "sha256": ref.sha256,
            "file": sent.path,
            "start": sent.start,
            "sent": sent.sent,
            "size": ref.size,
        },
    )


async def stage(op: OpContext, node: str) -> None:
    """The k3s binary (and the air-gap images, when added) for this version, checksum
    verified on the node; the binary waits beside the live one until configure/restart.
    A transfer cut by a dropped agent resumes where it stopped (:mod:`.transfer`)."""
    sh = op.shell(node)
    source = op.context.artifacts
    arch = await _arch(sh)
    ref = await source.find(K3S_ARTIFACT, op.spec.version, arch)

    async def report(sent: Sent) -> None:
        await _audit_sent(op, sent)

    if await file_sha256(sh, sh.paths.binary) != ref.sha256:
        staged = sh.paths.binary + ".staged"
        await stage_artifact(sh, ref, source, staged, mode="0755", report=report)
    try:
        images = await source.find(IMAGES_ARTIFACT, op.spec.version, arch)
    except NotFound:
        return
    target = f"{sh.paths.images_dir}/k3s-airgap-images-{arch}.tar"
    await stage_artifact(sh, images, source, target, mode="0644", report=report)


async def _install_staged(sh: NodeShell) -> None:
    staged = sh.paths.binary + ".staged"
    if (await sh.run(["test", "-e", staged])).code == 0:
        await sh.check(["mv", "-f", staged, sh.paths.binary])


async def configure(op: OpContext, node: str) -> None:
    """config.yaml from the one template, the first server's CA, the unit; enabled."""
    sh = op.shell(node)
    token = await op.token()
    endpoint = ""
    if op.spec.datastore == "external" and op.spec.role(node) == "server":
        secret = registry.secret_name(op.name, "datastore")
        endpoint = (await op.context.secrets.get(secret)).decode()
    if node == op.spec.first:
        cert, key = await op.ca()
        await sh.write_file(f"{sh.paths.tls_dir}/server-ca.crt", cert, mode="0644")
        await sh.write_file(f"{sh.paths.tls_dir}/server-ca.key", key, mode="0600")
    config = render_config(
        op.spec, node, token=str(token), paths=sh.paths, datastore_endpoint=endpoint
    )
    await sh.write_file(sh.paths.config, config.encode(), mode="0600")
    unit = unit_name(op.spec.role(node))
    await sh.write_file(
        sh.paths.unit_file(unit), render_unit(op.spec, node, paths=sh.paths).encode(), mode="0644"
    )
    await _install_staged(sh)
    await sh.check(["systemctl", "daemon-reload"])
    await sh.check(["systemctl", "enable", unit])


async def start(op: OpContext, node: str) -> None:
    sh = op.shell(node)
    unit = unit_name(op.spec.role(node))
    await sh.check(["systemctl", "start", unit], limit=300)
    await sh.check(["systemctl", "is-active", unit])


async def verify_ca(op: OpContext, node: str) -> None:
    """The CA the first server serves is the one the token's hash names."""
    sh = op.shell(node)
    served = await sh.read_file(f"{sh.paths.tls_dir}/server-ca.crt", secret=False)
    if not ca_matches(await op.token(), served):
        raise StepFailed(
            f"server/{node} serves a CA whose sha256 is not the cluster CA hash in the join"
            " token: refusing to join nodes to it"
        )


async def kubeconfig(op: OpContext, node: str) -> None:
    """k3s.yaml from the first server, for this cluster's CA, ``server:`` rewritten to the
    reachable address, stored sealed."""
    sh = op.shell(node)
    text = ""
    with trio.move_on_after(op.context.config.cluster_ready_timeout):
        while True:
            ran = await sh.run(["cat", sh.paths.kubeconfig])
            if ran.code == 0 and ran.out.strip():
                text = ran.text
                break
            await trio.sleep(0.5)
    if not text:
        raise StepFailed(f"server/{node} wrote no {sh.paths.kubeconfig}")
    try:
        conn = evolve(load_kubeconfig(text), server=op.spec.api_url)
    except Invalid as exc:
        raise StepFailed(f"server/{node} wrote a kubeconfig labd cannot read") from exc
    rewritten = dump_kubeconfig(conn, op.name)
    if not conn.ca_pem or not ca_matches(await op.token(), conn.ca_pem):
        raise StepFailed(
            f"the kubeconfig on server/{node} is for another cluster (its CA is not this cluster's)"
        )
    secret = registry.secret_name(op.name, "kubeconfig")
    await op.context.secrets.put(secret, rewritten.encode())
    op._kube = conn


async def _node(client: KubeClient, node: str) -> dict[str, Any] | None:
    try:
        got: dict[str, Any] = await client.get(f"/api/v1/nodes/{node}")
    except NotFound:
        return None
    return got


def node_ready(obj: dict[str, Any] | None, version: str | None = None) -> bool:
    if obj is None:
        return False
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    if version is None:
        return ready
    info = (obj.get("status") or {}).get("nodeInfo") or {}
    return ready and info.get("kubeletVersion") == version


async def ready(op: OpContext, node: str) -> None:
    """The node is Ready (and runs the cluster's version) through the API."""
    conn = await op.kube()
    last: dict[str, Any] | None = None
    with trio.move_on_after(op.context.config.cluster_ready_timeout):
        async with KubeClient(conn, timeout=10) as client:
            while True:
                try:
                    last = await _node(client, node)
                except Unavailable:
                    last = None  # the API restarts with its server
                if node_ready(last, op.spec.version):
                    return
                await trio.sleep(0.5)
    seen = "not registered" if last is None else "not Ready at " + op.spec.version
    raise StepFailed(f"server/{node} is {seen} after {op.context.config.cluster_ready_timeout:g}s")


async def _cordon(op: OpContext, node: str, unschedulable: bool) -> None:
    async with KubeClient(await op.kube(), timeout=30) as client:
        try:
            await client.request(
                "PATCH",
                f"/api/v1/nodes/{node}",
                json={"spec": {"unschedulable": unschedulable}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        except NotFound:
            return  # not registered (any more): nothing to cordon


async def cordon(op: OpContext, node: str) -> None:
    await _cordon(op, node, True)


async def uncordon(op: OpContext, node: str) -> None:
    await _cordon(op, node, False)


def _evictable(pod: dict[str, Any], node: str) -> bool:
    if (pod.get("spec") or {}).get("nodeName") != node:
        return False
    meta = pod.get("metadata") or {}
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return False
    owners = meta.get("ownerReferences") or []
    return not any(o.get("kind") == "DaemonSet" for o in owners)


async def drain(op: OpContext, node: str) -> None:
    """Evict every pod on the node but DaemonSet and mirror pods; wait until they are gone."""
    async with KubeClient(await op.kube(), timeout=30) as client:
        with trio.move_on_after(op.context.config.cluster_ready_timeout):
            while True:
                pods = (await client.get("/api/v1/pods")).get("items") or []
                left = [p for p in pods if _evictable(p, node)]
                if not left:
                    return
                for pod in left:
                    meta = pod["metadata"]
                    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                    body = {
                        "apiVersion": "policy/v1",
                        "kind": "Eviction",
                        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                    }
                    try:
                        await client.request("POST", f"{path}/eviction", json=body)
                    except NotFound:
                        # an API without the eviction subresource: delete the pod
                        with contextlib.suppress(NotFound):
                            await client.request("DELETE", path)
                await trio.sleep(0.5)
    raise StepFailed(f"pods on server/{node} were not evicted in time")


async def restart(op: OpContext, node: str) -> None:
    """The staged binary replaces the live one; the unit restarts."""
    sh = op.shell(node)
    await _install_staged(sh)
    await sh.check(["systemctl", "restart", unit_name(op.spec.role(node))], limit=300)


class StepSkipped(Exception):
    """The step did not run and the operation goes on; its text is kept on the step."""


async def uninstall(op: OpContext, node: str) -> None:
    """Stop and remove k3s from the node (as k3s-uninstall.sh); its data too unless
    ``keep_data``. With ``force``, a node whose agent cannot be reached is skipped (a
    machine that is gone for good must not keep its cluster in labd forever)."""
    try:
        await _uninstall(op, node)
    except Unavailable as exc:
        if not op.params.get("force"):
            raise
        raise StepSkipped(f"skipped (--force): {exc.message}") from exc


async def _uninstall(op: OpContext, node: str) -> None:
    sh = op.shell(node)
    for unit in ("k3s", "k3s-agent"):
        if (await sh.run(["test", "-e", sh.paths.unit_file(unit)])).code != 0:
            continue
        await sh.run(["systemctl", "stop", unit], limit=300)
        await sh.run(["systemctl", "disable", unit])
        await sh.check(["rm", "-f", sh.paths.unit_file(unit)])
    await sh.run(["systemctl", "daemon-reload"])
    staged = sh.paths.binary + ".staged"
    await sh.check(["rm", "-f", sh.paths.binary, staged, staged + ".part"])
    await sh.check(["rm", "-rf", sh.paths.config_dir])
    if not op.params.get("keep_data"):
        await sh.check(["rm", "-rf", sh.paths.data_dir])


async def delete_node(op: OpContext, node: str) -> None:
    async with KubeClient(await op.kube(), timeout=30) as client:
        with contextlib.suppress(NotFound):
            await client.request("DELETE", f"/api/v1/nodes/{node}")


async def register(op: OpContext, node: str) -> None:
    """The cluster is ready in labd's registry (its kubeconfig is already sealed)."""
    await registry.set_cluster(
        op.context, op.name, status="ready", version=op.spec.version, api_server=op.spec.api_url
    )


async def unregister(op: OpContext, node: str) -> None:
    """labd forgets the cluster: its registry record and every secret of it."""
    await registry.forget_cluster(op.context, op.name)
    store = op.context.secrets
    for what in ("kubeconfig", "token", "ca", "datastore"):
        with contextlib.suppress(NotFound):  # idempotent in labd's store; not in every one
            await store.delete(registry.secret_name(op.name, what))


STEPS: dict[str, Step] = {
    "credentials": credentials,
    "stage": stage,
    "configure": configure,
    "start": start,
    "verify-ca": verify_ca,
    "kubeconfig": kubeconfig,
    "ready": ready,
    "register": register,
    "cordon": cordon,
    "drain": drain,
    "restart": restart,
    "uncordon": uncordon,
    "uninstall": uninstall,
    "delete-node": delete_node,
    "unregister": unregister,
}
