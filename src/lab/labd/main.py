"""labd's entry point: read config, build dependencies, open the nursery, serve."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from cyclopts import App

from lab import __version__
from lab.errors import DatabaseUnreachable, LabError, Unavailable
from lab.labd.config import LabdConfig, load_labd_config
from lab.runtime.commandline import report, run_app

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from lab.labd.context import LabdContext
    from lab.store import AuditKey, Store

log = logging.getLogger("labd")

# The daemon's parts (quart, cryptography, the store) are imported inside the functions that
# build them, so that `labd --help` and `labd --version` do not pay for them; the only lazy
# imports in lab.labd (see docs/development.md, "Lazy imports").


def prepare_data_dir(path: Path) -> None:
    """Create the data dir (0700) and check it is writable; raise DataDirUnusable in one line."""
    from lab.runtime.datadir import prepare_data_dir as prepare

    prepare(path, setting="LABD_DATA_DIR (or data_dir in labd.yaml)")
    warn_if_readable(path)


@asynccontextmanager
async def open_database(config: LabdConfig, audit_key: AuditKey) -> AsyncIterator[Store]:
    """:func:`lab.store.open_store` for labd; a database that cannot be reached while opening
    is :class:`DatabaseUnreachable` (its own exit code), later failures pass unchanged.
    """
    from lab.store import open_store

    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(
                open_store(
                    config.effective_database_url,
                    timeout=config.database_timeout,
                    audit_key=audit_key,
                )
            )
        except Unavailable as exc:
            if isinstance(exc, DatabaseUnreachable):
                raise
            raise DatabaseUnreachable(
                exc.message,
                details={
                    **exc.details,
                    "hint": "check database_url (LABD_DATABASE_URL) and that the database runs",
                },
            ) from exc
        yield store


def warn_if_readable(path: Path) -> bool:
    """Log a warning when the data dir is group- or world-readable (it holds the CA key, the
    database and the bootstrap token); returns whether it warned. labd does not change the
    mode of a directory it did not create: the operator may share it on purpose."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077 == 0:
        return False
    log.warning(
        "data dir %s has mode %04o: other users may read or list it; run: chmod 700 %s",
        path,
        mode,
        path,
    )
    return True


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
    from lab.labd.access.ratelimit import RateLimiter
    from lab.labd.app import create_app
    from lab.labd.audit.checkpoints import Checkpointer, CheckpointLog
    from lab.labd.audit.keys import audit_keys
    from lab.labd.cluster import ClusterMember, advertised_names
    from lab.labd.clusterops.engine import OpEngine
    from lab.labd.context import LabdContext
    from lab.labd.hub.registry import AgentHub, default_replica
    from lab.labd.identity.ca import CAService
    from lab.labd.identity.identities import Identities, Revocations
    from lab.labd.secrets import SecretsStore, key_encryption_key
    from lab.pki import resolve_ca_passphrase

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
        )
        context.cluster_ops = OpEngine(context, replica_id)
        # Revoked here or on another replica (cluster reload): the user's live streams end.
        revocations.subscribe(context.user_sessions.revoked)
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


async def _serve(
    context: LabdContext,
    app: QuartTrio,
    bootstrap: Path | None,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[tuple[str, int]],
) -> None:
    """Open the nursery and start the services; returns once they all stopped."""
    from lab.labd.cluster import advertise_url
    from lab.runtime import sdnotify
    from lab.runtime.connguard import ConnectionGuard, ConnectionLimits
    from lab.runtime.tls_server import serve_asgi

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
            )
        )
        log.info("labd listening on https://%s:%d (database %s)", host, port, context.store.url)
        await nursery.start(cluster.run, shutdown, advertise_url(config, host, port))
        if context.cluster_ops is not None:
            await nursery.start(context.cluster_ops.run, shutdown)
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
    from lab.runtime import sdnotify
    from lab.runtime.shutdown import watch_signals

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, shutdown)
        # systemd: WATCHDOG=1 from the root nursery, STOPPING=1 once shutdown begins.
        await nursery.start(sdnotify.watchdog)
        nursery.start_soon(sdnotify.announce_stopping, shutdown)
        await serve_labd(config, shutdown=shutdown)
        nursery.cancel_scope.cancel()


app = App(
    name="labd",
    help="The labctl master daemon: REST and WebSocket API, built-in CA, RBAC, audit, agent hub."
    "\n\nIt takes its settings from LABD_CONFIG (else /etc/lab/labd.yaml when it exists) and "
    "LABD_* environment variables, and serves until SIGTERM or SIGINT. Exit codes: 0 stopped, "
    "1 start-up failure, 2 bad command line, 3 port in use, 4 data dir unusable, 5 database "
    "unreachable, 6 missing extra (docs/operations.md).\n\nExample: LABD_PORT=3100 labd",
    usage="Usage: labd [--help | --version | secrets rotate]",
    version=f"labd {__version__}",
    version_flags=["--version", "-V"],
    help_flags=["--help", "-h"],
)


@app.default
def serve() -> None:
    """Serve until SIGTERM or SIGINT (the only thing labd does)."""
    from lab.runtime.entry import run_daemon
    from lab.runtime.logs import setup_logging

    try:
        config = load_labd_config()
    except LabError as exc:
        hint = exc.details.get("hint")
        report(exc.message, str(hint) if hint else None, program="labd")
        raise SystemExit(1) from None
    setup_logging(config.log_level, config.log_format)
    run_daemon("labd", _run, config)


secrets_app = App(
    name="secrets",
    help="The secrets store (kubeconfigs, k3s tokens): see docs/clusters.md.",
)
app.command(secrets_app)


@secrets_app.command
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
    from lab.labd.secrets.rotate import rotate_secrets

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


def main() -> None:
    run_app(app, program="labd")


if __name__ == "__main__":
    main()
