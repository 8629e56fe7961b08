"""The clusters labd knows (``ctx().clusters``): their records in the store, their kubeconfigs
sealed in the secrets store (``cluster/NAME/kubeconfig``), importing one, live health.

A kubeconfig is kept flattened to the one context it was imported with, renamed to the
cluster's name; it leaves this object only as a :class:`KubeConnection` for labd's own calls
or through :meth:`ClusterRegistry.kubeconfig` for the ``clusters:read-credentials`` route.
"""

from __future__ import annotations

import re

import trio

from lab.errors import Conflict, Invalid, NotFound, PermissionDenied, Unavailable
from lab.kube import KubeClient, KubeConnection, dump_kubeconfig, load_kubeconfig
from lab.labd.clusters.health import PROBE_TIMEOUT, Health, probe
from lab.labd.secrets import SecretsStore
from lab.model import Cluster
from lab.store import Store

CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
IMPORTED = "imported"


def check_cluster_name(name: str, field: str = "name") -> str:
    """``name`` if it is an RFC 1123 label (lowercase letters, digits, '-', at most 63)."""
    if not CLUSTER_NAME.fullmatch(name):
        raise Invalid(
            f"cluster name {name[:80]!r} must be lowercase letters, digits and '-' "
            "(at most 63, starting and ending with a letter or digit)",
            details={"fields": [field]},
        )
    return name


def kubeconfig_secret(name: str) -> str:
    return f"cluster/{name}/kubeconfig"


class ClusterRegistry:
    """Every method raises :class:`NotFound` for an unknown cluster and
    :class:`lab.errors.Unavailable` when the database cannot be reached."""

    def __init__(self, store: Store, secrets: SecretsStore) -> None:
        self._store = store
        self._secrets = secrets

    async def get(self, name: str) -> Cluster:
        return await self._store.clusters.get(name)

    async def list(self) -> list[Cluster]:
        return await self._store.clusters.list()

    async def kubeconfig(self, name: str) -> str:
        """The stored kubeconfig text (credentials included: callers must be allowed
        ``clusters:read-credentials``)."""
        await self.get(name)
        try:
            return (await self._secrets.get(kubeconfig_secret(name))).decode("utf-8")
        except NotFound:
            raise NotFound(
                f"cluster {name!r} has no kubeconfig yet",
                details={"resource": f"cluster/{name}"},
            ) from None

    async def connection(self, name: str) -> KubeConnection:
        """How labd reaches the cluster's API server (unsealed from the stored kubeconfig)."""
        return load_kubeconfig(await self.kubeconfig(name))

    async def set_kubeconfig(self, name: str, conn: KubeConnection) -> None:
        """Store ``conn`` as the cluster's kubeconfig (sealed), e.g. once a create finished."""
        await self.get(name)
        text = dump_kubeconfig(conn, name)
        await self._secrets.put(kubeconfig_secret(name), text.encode("utf-8"))

    async def health(self, name: str, *, within: float = PROBE_TIMEOUT) -> Health:
        try:
            conn = await self.connection(name)
        except NotFound:
            await self.get(name)  # an unknown cluster stays NotFound
            return Health(state="Unknown", message="no kubeconfig stored yet")
        return await probe(conn, within=within)

    async def import_cluster(
        self, name: str, kubeconfig: str, *, context: str | None, created_by: str
    ) -> Cluster:
        """Check that the kubeconfig reaches an API server (``/version``), then record the
        cluster and store the kubeconfig sealed.

        Raises :class:`Invalid` for a kubeconfig that does not parse or whose credentials the
        API server refuses (``details["fields"]`` names the field), :class:`Unavailable`
        when the API server does not answer, :class:`Conflict` when the name is taken.
        """
        check_cluster_name(name)
        try:
            conn = load_kubeconfig(kubeconfig, context)
        except Invalid as exc:
            fields = [f"kubeconfig.{f}" for f in exc.details.get("fields", [])]
            raise Invalid(exc.message, details={"fields": fields or ["kubeconfig"]}) from None
        if name in {c.name for c in await self.list()}:
            raise Conflict(f"cluster {name!r} already exists", details={"name": name})
        version = await _version(conn)
        created = await self._store.clusters.create(
            Cluster(
                name=name,
                origin=IMPORTED,
                api_server=conn.server,
                version=version,
                status="ready",
                created_by=created_by,
            )
        )
        try:
            await self._secrets.put(
                kubeconfig_secret(name), dump_kubeconfig(conn, name).encode("utf-8")
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._store.clusters.delete(name)
            raise
        return created

    async def delete_imported(self, name: str) -> Cluster:
        """Forget an imported cluster and its secrets (the cluster itself is untouched)."""
        cluster = await self.get(name)
        if cluster.origin != IMPORTED:
            raise Conflict(
                f"cluster {name!r} was created by labd: delete it as an operation",
                details={"hint": f"labctl clusters delete {name}"},
            )
        await self._store.clusters.delete(name)
        for secret in await self._secrets.names(f"cluster/{name}/"):
            await self._secrets.delete(secret)
        return cluster


async def _version(conn: KubeConnection) -> str:
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            async with KubeClient(conn, timeout=PROBE_TIMEOUT) as kube:
                return str((await kube.version())["gitVersion"])
    except trio.TooSlowError:
        raise Unavailable(
            f"the API server {conn.server} did not answer /version within {PROBE_TIMEOUT:g}s",
            details={"reason": "cluster_unreachable"},
        ) from None
    except PermissionDenied as exc:
        raise Invalid(
            f"the API server {conn.server} refused the kubeconfig's credentials: {exc.message}",
            details={"fields": ["kubeconfig"], "reason": "credentials_refused"},
        ) from None
    except Unavailable as exc:
        raise Unavailable(
            f"the API server does not answer /version: {exc.message}",
            details={"reason": "cluster_unreachable"},
        ) from None
