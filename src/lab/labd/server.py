"""labd's server: read config, build dependencies, open the nursery, serve.

The commands of lab.labd.main that need it (``labd``, ``labd secrets rotate``) are here too:
cyclopts imports this module only when one of them runs, so ``labd --help`` and
``labd --version`` do not load the server stack (quart, hypercorn, the API).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio
from quart_trio import QuartTrio

from lab.errors import LabError
from lab.labd.access.ratelimit import RateLimiter
from lab.labd.api.agent_front import AgentFront
from lab.labd.app import KUBE_PROXY, create_app
from lab.labd.apps.engine import AppEngine
from lab.labd.artifacts import ArtifactStore
from lab.labd.audit.checkpoints import Checkpointer, CheckpointLog
from lab.labd.audit.entries import record
from lab.labd.audit.keys import audit_keys
from lab.labd.cluster import ClusterMember, advertise_url, advertised_names
from lab.labd.clusterops.engine import OpEngine
from lab.labd.clusters import ClusterRegistry
from lab.labd.config import LabdConfig, load_labd_config
from lab.labd.context import LabdContext
from lab.labd.hub.registry import AgentHub, default_replica
from lab.labd.identity.ca import CAService
from lab.labd.identity.identities import Identities, Revocations
from lab.labd.kubeproxy.front import KubeFront
from lab.labd.secrets import SecretsStore, key_encryption_key
from lab.labd.secrets.power import move_power_passwords
from lab.labd.secrets.rotate import rotate_secrets
from lab.labd.storage import open_database, prepare_data_dir
from lab.pki import SEAL_LABEL, resolve_ca_passphrase
from lab.runtime import sdnotify
from lab.runtime.commandline import report
from lab.runtime.connguard import ConnectionGuard, ConnectionLimits
from lab.runtime.entry import run_daemon
from lab.runtime.logs import setup_logging
from lab.runtime.shutdown import watch_signals
from lab.runtime.tls_server import serve_asgi

log = logging.getLogger("labd")


async def serve_labd(
    config: LabdConfig,
    *,
    shutdown: trio.Event,
    on_context: Callable[[LabdContext], None] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run labd until ``shutdown`` is set; reports ``(host, port)`` once listening.

    ``on_context`` is called with the daemon's context once it is built (tests reach the
    agent hub through it).

    Raises LabError subclasses for unusable config (data dir, database, schema too new).
    """

    prepare_data_dir(config.data_path)
    passphrase = resolve_ca_passphrase(config.data_path)
    keys = await trio.to_thread.run_sync(audit_keys, passphrase)
    kek = await trio.to_thread.run_sync(key_encryption_key, config.secrets_key_file, passphrase)
    async with open_database(config, keys.chain) as store:
        names = (*config.server_names, *advertised_names(config))
        ca = CAService(store, passphrase, server_names=names)
        await ca.load()
        # After the CA: a wrong CA passphrase is reported as such, not as a wrong audit key.
        await store.audit.start_chain()
        secrets = SecretsStore(store.secrets, kek)
        await secrets.check()
        revocations = Revocations(store)
        await revocations.load()
        replica_id = config.replica_id or default_replica()
        hub = AgentHub(
            store,
            revocations,
            admit_rate=config.agent_admit_rate,
            drain_timeout=min(2.0, config.shutdown_grace / 2),
            replica=replica_id,
        )
        cluster = ClusterMember(store, ca, revocations, replica_id)
        await cluster.issue_certificate()
        context = LabdContext(
            config=config,
            store=store,
            ca=ca,
            revocations=revocations,
            identities=Identities(store, ca, revocations),
            enroll_limiter=RateLimiter(config.enroll_rate, name="enrollment requests"),
            hub=hub,
            cluster=cluster,
            audit_keys=keys,
            checkpointer=Checkpointer(
                store,
                CheckpointLog(config.data_path, keys),
                every=config.audit_checkpoint_every,
            ),
            secrets=secrets,
            clusters=ClusterRegistry(store, secrets),
            artifacts=ArtifactStore(
                store.artifacts, config.artifacts_path, max_size=config.artifacts_max_size
            ),
        )
        context.cluster_ops = OpEngine(context, replica_id)
        context.apps = AppEngine(context, replica_id)
        # Revoked here or on another replica (cluster reload): the user's live streams end.
        revocations.subscribe(context.user_sessions.revoked)
        # Users or roles changed on another replica: read roles afresh.
        context.identities.role_cache.ttl = config.role_cache_ttl
        cluster.subscribe(context.identities.role_cache.forget)
        await _move_power_passwords(context)
        if on_context is not None:
            on_context(context)
        ca.write_bundle(config.data_path)
        bootstrap = await context.identities.bootstrap(config.data_path)
        app = create_app(context)
        try:
            await _serve(context, app, bootstrap, shutdown, task_status)
        finally:
            # Every request has been answered (or we were cancelled): checkpoint the head.
            with trio.CancelScope(shield=True):
                await _final_checkpoint(context)


async def _move_power_passwords(context: LabdContext) -> None:
    """BMC passwords an older labd sealed in their power rows go to the secrets store."""
    legacy_key = context.audit_keys.chain.derive(SEAL_LABEL)
    moved = await move_power_passwords(context.store, context.secrets, legacy_key)
    if moved:
        log.info("moved %d power passwords into the secrets store", moved)
        await record(
            context, action="secrets:move-power", resource="secrets", user="labd",
            details={"moved": moved},
        )  # fmt: skip


async def _serve(
    context: LabdContext,
    app: QuartTrio,
    bootstrap: Path | None,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[tuple[str, int]],
) -> None:
    """Open the nursery and start the services; returns once they all stopped."""

    config, ca, cluster = context.config, context.ca, context.cluster
    assert cluster is not None
    guard = ConnectionGuard(
        ConnectionLimits(
            handshake_timeout=config.handshake_timeout,
            idle_timeout=config.idle_timeout,
            max_unauthenticated_per_address=config.max_unauthenticated_per_address,
        ),
        on_refused=context.metrics.connections.refused,
        on_handshake_failure=context.metrics.connections.handshake_failed,
    )
    context.metrics.connections.watch(guard.unauthenticated)
    async with trio.open_nursery() as nursery:
        await nursery.start(context.checkpointer.run, shutdown)
        # Agents hear about the shutdown from the hub before hypercorn's grace runs out.
        await nursery.start(context.hub.run, shutdown)
        host, port = await nursery.start(
            partial(
                serve_asgi,
                app,
                host=config.host,
                port=config.port,
                shutdown_event=shutdown,
                ssl_context=ca.server_ssl_context(),
                graceful_timeout=config.shutdown_grace,
                guard=guard,
                # /ws/agent, then GET /k8s/…, below hypercorn and quart.
                tls_front=AgentFront(
                    context,
                    app.extensions["lab.limits"],
                    idle_timeout=config.idle_timeout,
                    then=KubeFront(app.extensions[KUBE_PROXY], idle_timeout=config.idle_timeout),
                ),
                raw_upgrade_prefixes=("/k8s/",),
            )
        )
        log.info("labd listening on https://%s:%d (database %s)", host, port, context.store.url)
        await nursery.start(cluster.run, shutdown, advertise_url(config, host, port))
        if context.cluster_ops is not None:
            await nursery.start(context.cluster_ops.run, shutdown)
        if context.apps is not None:
            await nursery.start(context.apps.run, shutdown)
        if bootstrap is not None:
            announce_bootstrap(bootstrap, host, port, ca.fingerprint())
        task_status.started((host, port))
        sdnotify.ready(f"listening on {host}:{port}")


async def _final_checkpoint(context: LabdContext) -> None:
    try:
        with trio.fail_after(10):
            await context.checkpointer.write()
    except Exception:
        log.exception("could not write the shutdown audit checkpoint")


def announce_bootstrap(path: Path, host: str, port: int, fingerprint: str) -> None:
    """Tell the operator how to log in first; the secret stays in the 0600 file, not the log."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    print(
        "labd: first start. Log in as admin with:\n"
        f'  labctl login --server https://{shown}:{port} --token "$(cat {path})"'
        f" --ca-fingerprint {fingerprint}",
        file=sys.stderr,
        flush=True,
    )


async def _run(config: LabdConfig) -> None:

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, shutdown)
        # systemd: WATCHDOG=1 from the root nursery, STOPPING=1 once shutdown begins.
        await nursery.start(sdnotify.watchdog)
        nursery.start_soon(sdnotify.announce_stopping, shutdown)
        await serve_labd(config, shutdown=shutdown)
        nursery.cancel_scope.cancel()


def serve() -> None:
    """Serve until SIGTERM or SIGINT (the only thing labd does)."""

    try:
        config = load_labd_config()
    except LabError as exc:
        hint = exc.details.get("hint")
        report(exc.message, str(hint) if hint else None, program="labd")
        raise SystemExit(1) from None
    setup_logging(config.log_level, config.log_format)
    run_daemon("labd", _run, config)


def rotate(*, previous_key_file: Path | None = None) -> None:
    """Re-seal every secret under a new data key wrapped by the current key-encryption key.

    Run it on one replica (labd may keep serving). After changing LABD_SECRETS_KEY_FILE, give
    the former key file (or former CA passphrase file) as --previous-key-file. Audited as
    secrets:rotate.

    Example: labd secrets rotate --previous-key-file /etc/lab/secrets.key.old

    Parameters
    ----------
    previous_key_file
        The key file (or CA passphrase file) the data keys were wrapped with until now.
    """

    try:
        config = load_labd_config()
        done = trio.run(rotate_secrets, config, previous_key_file)
    except LabError as exc:
        hint = exc.details.get("hint")
        report(exc.message, str(hint) if hint else None, program="labd")
        raise SystemExit(1) from None
    print(
        f"secrets rotated: data key {done.key_id}, {done.resealed} values re-sealed, "
        f"{done.dropped} old data keys dropped"
    )
