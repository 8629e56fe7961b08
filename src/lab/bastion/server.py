"""Run a bastion: store, HTTP app, phase watchdog and (optionally) dnsmasq in one nursery."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path

import trio
from quart_trio import QuartTrio

from lab.bastion import dnsmasq
from lab.bastion.app import DispatchFastPath, Observed, create_app
from lab.bastion.config import BastionConfig
from lab.bastion.fastpath import DispatchFront
from lab.bastion.labd_link import load_link, open_labd_link
from lab.bastion.operators import Operators
from lab.bastion.service import Bastion, EnrollmentCheck, JoinTokenSource, StaticTokenSource
from lab.bastion.templates import Templates, check_url
from lab.bastion.tokens import load_or_create_admin_token
from lab.runtime import sdnotify
from lab.runtime.connguard import ConnectionGuard, ConnectionLimits
from lab.runtime.datadir import prepare_data_dir
from lab.runtime.logbuffer import LogBuffer, attached
from lab.runtime.metrics import BastionMetrics
from lab.runtime.safetext import EscapeControlFilter
from lab.runtime.tls_server import serve_asgi
from lab.store import open_store

log = logging.getLogger("lab.bastion")


def _join_source(config: BastionConfig) -> JoinTokenSource | None:
    return StaticTokenSource(config.join_token) if config.join_token else None


async def serve_bastion(
    config: BastionConfig,
    *,
    shutdown_event: trio.Event | None = None,
    join_tokens: JoinTokenSource | None = None,
    listening: Callable[[str, tuple[str, int]], None] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_event`` is set (or until cancelled).

    ``task_status.started((host, port))`` once HTTP is bound and, when DHCP is enabled,
    dnsmasq is answering. ``join_tokens`` overrides the source built from the config; else a
    bastion joined to labd (``lab-bastion join``) asks labd for a one-time agent token per
    install and lets the watchdog check enrollment, and ``join_token`` is the fallback. Raises
    ConfigError (unusable settings, no dnsmasq binary), Unavailable (dnsmasq would not start)
    and OSError (port taken). Shutdown: HTTP drains for up to 5 s (followers of /api/logs are
    ended at once); dnsmasq gets SIGTERM.

    The process's log records (dnsmasq's forwarded lines included) are kept in a ring for
    ``/api/logs`` while this runs; metrics live in a registry of this call's own.

    A joined bastion also serves its operator API over TLS on ``operator_port`` for labd user
    certificates (:mod:`lab.bastion.operators`); its admin token is then refused.
    ``listening(name, (host, port))`` hears of each bound listener (``http``, ``operator``).
    """
    data = config.data_path
    prepare_data_dir(data, setting="LAB_BASTION_DATA_DIR (or data_dir in bastion.yaml)")
    admin_token = load_or_create_admin_token(data / "admin-token")
    shutdown = trio.Event() if shutdown_event is None else shutdown_event
    dhcp = bool(config.interface) and not config.no_dhcp
    server_ip, network = "", ""
    if config.interface:
        server_ip, network = await trio.to_thread.run_sync(
            dnsmasq.interface_address, config.interface
        )

    def base_url(port: int) -> str:
        return config.public_url or f"http://{server_ip or _reachable(config.host)}:{port}"

    link = load_link(data) if join_tokens is None and not config.join_token else None
    metrics = BastionMetrics()
    async with AsyncExitStack() as stack:
        logs = stack.enter_context(attached(LogBuffer(config.log_buffer)))
        # Machines put text in what the bastion logs (inventories, progress, DHCP names):
        # every record leaves with its control characters escaped.
        stack.enter_context(escaping_handlers(logs))
        enrollment: EnrollmentCheck | None = None
        labd_url = config.labd_url or None
        labd_fingerprint = config.labd_ca_fingerprint or None
        source = None
        if link is not None:
            source = await stack.enter_async_context(open_labd_link(link))
            join_tokens, enrollment = source, source
            labd_url = labd_url or link.server
            labd_fingerprint = labd_fingerprint or link.ca_fingerprint
            log.info("joined to labd %s as bastion/%s", link.server, link.name)
        store = await stack.enter_async_context(open_store(config.db_url))
        nursery = await stack.enter_async_context(trio.open_nursery())
        templates = Templates(base_url=base_url(config.port), repo=config.repo)
        bastion = Bastion(
            store.machines,
            store.settings,
            templates,
            join_tokens=join_tokens or _join_source(config),
            enrollment=enrollment,
            labd_url=labd_url,
            labd_ca_fingerprint=labd_fingerprint,
            timeouts=config.timeouts,
            join_ttl=timedelta(seconds=config.join_ttl),
            metrics=metrics,
        )
        await bastion.start()
        operators = Operators(
            admin_token,
            source,
            hint=f"labctl provision --bastion https://<this host>:{config.operator_port} ...",
        )

        def app_of() -> QuartTrio:
            return create_app(
                bastion,
                admin_token=admin_token,
                wheelhouse=data / "wheelhouse",
                logs=logs,
                operators=operators,
            )

        app = app_of()
        # One guard for both listeners: a source address's unauthenticated connections count
        # together.
        guard = ConnectionGuard(
            ConnectionLimits(
                handshake_timeout=config.handshake_timeout,
                idle_timeout=config.idle_timeout,
                max_unauthenticated_per_address=config.max_unauthenticated_per_address,
            ),
            on_refused=metrics.connections.refused,
            on_handshake_failure=metrics.connections.handshake_failed,
        )
        metrics.connections.watch(guard.unauthenticated)
        fast = DispatchFastPath(app, bastion)
        host, port = await nursery.start(
            partial(
                serve_asgi,
                Observed(fast, metrics),
                host=config.host,
                port=config.port,
                shutdown_event=shutdown,
                guard=guard,
                # /dispatch on the connection itself; the rest (and its errors) through Quart.
                front=DispatchFront(fast.answer, metrics, idle_timeout=config.idle_timeout),
            )
        )
        # With port 0 (tests) the URL in the scripts is known only now.
        templates.base_url = check_url(base_url(port), field="public_url")
        if listening is not None:
            listening("http", (host, port))
        if source is not None:
            # Joined: the operator API over TLS, for labd users' certificates.
            op_host, op_port = await nursery.start(
                partial(
                    serve_asgi,
                    Observed(app_of(), metrics),
                    host=config.host,
                    port=config.operator_port,
                    shutdown_event=shutdown,
                    ssl_context=source.server_ssl_context(),
                    guard=guard,
                )
            )
            log.info("operator API for labd users on https://%s:%d", op_host, op_port)
            if listening is not None:
                listening("operator", (op_host, op_port))
        # The watchdog and dnsmasq live in their own nursery: on shutdown they are cancelled
        # at once, while serve_asgi (which watches the same event) drains open requests.
        async with trio.open_nursery() as aux:
            aux.start_soon(bastion.run_watchdog, config.watchdog_interval)
            if source is not None:
                # The bastion/NAME certificate is renewed at 2/3 of its life, like an agent's.
                aux.start_soon(source.run_renewal)
                # A witness of labd's audit log: its newest checkpoint, kept here.
                aux.start_soon(source.run_witness, config.audit_witness_interval)
            if dhcp:
                settings = dnsmasq.DhcpSettings(
                    interface=config.interface,
                    server_ip=server_ip,
                    http_port=port,
                    mode="dhcp" if config.dhcp_mode == "dhcp" else "proxy",
                    network=network,
                    dhcp_range=config.dhcp_range,
                    data_dir=data / "dnsmasq",
                )
                await aux.start(
                    partial(
                        dnsmasq.supervise_dnsmasq,
                        settings,
                        binary=config.dnsmasq,
                        ipxe_dir=Path(config.ipxe_dir),
                        metrics=metrics,
                    )
                )
                log.info("DHCP (%s) and TFTP on %s", settings.mode, config.interface)
            elif config.no_dhcp:
                log.info("DHCP disabled (--no-dhcp): serving HTTP only on %s:%d", host, port)
            else:
                log.info(
                    "no --interface given: serving HTTP only on %s:%d, no DHCP/TFTP", host, port
                )
            log.info("lab-bastion ready at %s (data in %s)", templates.base_url, data)
            task_status.started((host, port))
            sdnotify.ready(f"serving {templates.base_url}")
            await shutdown.wait()
            logs.close()
            aux.cancel_scope.cancel()


@contextmanager
def escaping_handlers(*extra: logging.Handler) -> Iterator[None]:
    """Escape control characters on the root logger's handlers and ``extra`` for the block."""
    escape = EscapeControlFilter()
    handlers = [*logging.getLogger().handlers, *extra]
    for handler in handlers:
        handler.addFilter(escape)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(escape)


def _reachable(host: str) -> str:
    """An address clients can use for a listen address (a wildcard is not one)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104
