"""Every Prometheus metric of the daemons, defined in one place.

Each daemon process builds one :class:`LabdMetrics` or :class:`BastionMetrics`; each holds its
own ``CollectorRegistry`` (never prometheus_client's global one), so several daemons in one
test process do not collide. Code that changes a number calls the attribute or helper here,
e.g. ``metrics.exec_sessions_active.inc()`` or ``with metrics.track_exec(): ...``; the
``/metrics`` route renders the registry with :func:`render`.

Label values must come from small fixed sets (route templates, states, outcomes), never from
names or addresses: each distinct value is a new time series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# Request and commit latencies: sub-millisecond SQLite commits up to slow cluster round trips.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MACHINE_STATES = ("discovered", "queued", "installing", "installed", "enrolled", "failed")
"""The bastion's machine states (DESIGN §8); ``set_machines`` reports absent ones as 0."""

UNMATCHED_ROUTE = "<unmatched>"
"""The ``route`` label of requests no route matched: scanners add one series, not many."""


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    # process_* (CPU, memory, open fds) and python_info, for this process only.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def _request_histogram(namespace: str, registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "http_request_duration_seconds",
        "Time from request to response headers, by route template, method and status.",
        ["route", "method", "status"],
        namespace=namespace,
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )


class ConnectionCounters:
    """Connection-level refusals of one daemon's listener: TLS handshake failures by reason
    (``timeout``, ``error``), connections refused at accept by reason, and the gauge of open
    unauthenticated connections."""

    def __init__(self, namespace: str, registry: CollectorRegistry) -> None:
        self.tls_handshake_failures = Counter(
            "tls_handshake_failures",
            "TLS handshakes that did not finish, by reason (timeout, error: e.g. a client "
            "certificate our CA did not sign, a wrong protocol, a dropped connection).",
            ["reason"],
            namespace=namespace,
            registry=registry,
        )
        self.connections_refused = Counter(
            "connections_refused",
            "Connections closed at accept, by reason (per_address_limit: the source address "
            "held max_unauthenticated_per_address unauthenticated connections).",
            ["reason"],
            namespace=namespace,
            registry=registry,
        )
        self.unauthenticated = Gauge(
            "unauthenticated_connections",
            "Open connections without a client certificate (TLS handshakes in progress included).",
            namespace=namespace,
            registry=registry,
        )
        for reason in ("timeout", "error"):
            self.tls_handshake_failures.labels(reason)
        self.connections_refused.labels("per_address_limit")

    def watch(self, unauthenticated: Callable[[], float]) -> None:
        """Read the unauthenticated-connections gauge from ``unauthenticated()`` at scrape time."""
        self.unauthenticated.set_function(unauthenticated)

    def handshake_failed(self, reason: str) -> None:
        self.tls_handshake_failures.labels(reason).inc()

    def refused(self, reason: str) -> None:
        self.connections_refused.labels(reason).inc()


class LabdMetrics:
    """labd's metrics (names start with ``labd_``)."""

    def __init__(self) -> None:
        self.registry = _registry()
        r = self.registry
        self.agents_connected = Gauge(
            "agents_connected",
            "Agents with a live WebSocket session on this replica.",
            namespace="labd",
            registry=r,
        )
        self.exec_sessions_active = Gauge(
            "exec_sessions_active",
            "Remote exec sessions running through this replica.",
            namespace="labd",
            registry=r,
        )
        self.exec_sessions = Counter(
            "exec_sessions",
            "Remote exec sessions started through this replica.",
            namespace="labd",
            registry=r,
        )
        self.requests = _request_histogram("labd", r)
        self.audit_queue_depth = Gauge(
            "audit_queue_depth",
            "Audit entries waiting to be committed (an action waits for its entry).",
            namespace="labd",
            registry=r,
        )
        self.audit_commit_seconds = Histogram(
            "audit_commit_duration_seconds",
            "Time from submitting an audit entry to its durable commit.",
            namespace="labd",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.enrollments = Counter(
            "enrollments",
            "Enrollment requests by kind (agent, user) and result (success, denied, invalid, "
            "rate_limited, error).",
            ["kind", "result"],
            namespace="labd",
            registry=r,
        )
        self.auth_refusals = Counter(
            "auth_refusals",
            "Agent WebSocket handshakes refused by certificate checks, by reason (revoked,"
            " expired, malformed, foreign_ca, wrong_profile, ...). Each is counted; repeats of"
            " one identity and reason are audited at most once an hour.",
            ["reason"],
            namespace="labd",
            registry=r,
        )
        self.connections = ConnectionCounters("labd", r)
        self.kube_requests = Counter(
            "kube_requests",
            "Requests through the Kubernetes API proxy (/k8s), by verb and result (success,"
            " denied, error); discovery requests are counted here and not audited one by one.",
            ["verb", "result"],
            namespace="labd",
            registry=r,
        )
        self.kube_discovery_requests = Counter(
            "kube_discovery_requests",
            "API descriptions (/api, /apis, /openapi, /version) served through /k8s.",
            namespace="labd",
            registry=r,
        )
        self.kube_sessions_active = Gauge(
            "kube_sessions_active",
            "exec, attach and port-forward sessions open through /k8s on this replica.",
            namespace="labd",
            registry=r,
        )

    @contextmanager
    def track_exec(self) -> Iterator[None]:
        """Count one exec session for the duration of the ``with`` block."""
        self.exec_sessions.inc()
        self.exec_sessions_active.inc()
        try:
            yield
        finally:
            self.exec_sessions_active.dec()

    @contextmanager
    def audit_commit(self) -> Iterator[None]:
        """Wrap one audit append: queue depth while it waits, latency once it is durable.

        A failed or cancelled commit leaves the queue but is not observed as a latency.
        """
        self.audit_queue_depth.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.audit_queue_depth.dec()
        self.audit_commit_seconds.observe(time.perf_counter() - started)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route or UNMATCHED_ROUTE, method, str(status)).observe(seconds)


class BastionMetrics:
    """lab-bastion's metrics (names start with ``lab_bastion_``)."""

    def __init__(self) -> None:
        self.registry = _registry()
        r = self.registry
        self.requests = _request_histogram("lab_bastion", r)
        self.pxe_dispatches = Counter(
            "pxe_dispatches",
            "iPXE /dispatch answers by outcome (discover, install, reprovision, local, error).",
            ["outcome"],
            namespace="lab_bastion",
            registry=r,
        )
        self.machines = Gauge(
            "machines",
            "Known machines by state.",
            ["state"],
            namespace="lab_bastion",
            registry=r,
        )
        self.dnsmasq_restarts = Counter(
            "dnsmasq_restarts",
            "Times the supervised dnsmasq was restarted after it exited.",
            namespace="lab_bastion",
            registry=r,
        )
        self.connections = ConnectionCounters("lab_bastion", r)
        for state in MACHINE_STATES:
            self.machines.labels(state).set(0)

    def set_machines(self, counts: Mapping[str, int]) -> None:
        """Set the per-state gauge from ``{state: count}``; known states not given become 0."""
        for state in _union(MACHINE_STATES, counts):
            self.machines.labels(state).set(counts.get(state, 0))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route or UNMATCHED_ROUTE, method, str(status)).observe(seconds)


def _union(first: Iterable[str], second: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
