"""lab-agent's long-running part: one mTLS WebSocket to labd, exec and logs, renewal.

:class:`lab.proto.session.AgentSession` decides (connect, hello, heartbeats, backoff, the
``retry_after`` of a shutdown); this module is its trio driver. Each connection is a nursery
holding the reader, the session timer and a :class:`lab.agent.dispatch.Dispatcher` with one
task per stream, so losing the connection (or stopping) kills every process it started.
"""

from __future__ import annotations

import logging
import math
import os
import random
import ssl
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio
import yaml
from attrs import Factory, frozen
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from lab import __version__
from lab.agent.dispatch import ConnectionGone, Dispatcher, SendFn
from lab.agent.executor import Outgoing
from lab.agent.identity import AGENT_FILE, EnrolledIdentity, load_enrolled, renew
from lab.agent.leftovers import Ledger
from lab.agent.wsconnect import connect as connect  # re-exported: tests open raw agent connections
from lab.client.api import LabClient
from lab.client.credentials import load_credentials
from lab.errors import ConfigError, LabError
from lab.proto import ProtocolError, decode, decode_data, encode
from lab.proto.messages import Heartbeat, Hello
from lab.proto.session import (
    AgentSession,
    Close,
    Command,
    Connect,
    Deliver,
    Send,
    SendHeartbeat,
    State,
)
from lab.runtime.renewal import keep_renewed

log = logging.getLogger("lab.agent")

LOG_SOURCES_ENV = "LAB_AGENT_LOG_SOURCES"
SERVERS_ENV = "LAB_AGENT_SERVERS"
PID_FILE = "lab-agent.pid"
CLOSE_TIMEOUT = 2.0
# Messages and data frames queued for the writer (frames are at most MAX_PAYLOAD each).
OUTBOX_SIZE = 32


@frozen(kw_only=True)
class AgentSettings:
    """How ``lab-agent run`` behaves; :func:`load_settings` reads them from the state dir."""

    state_dir: Path
    # Named log files for `labctl logs server/NAME --source NAME` (agent.yaml `log_sources`,
    # or LAB_AGENT_LOG_SOURCES=name=path,...).
    log_sources: dict[str, Path] = Factory(dict)
    # Labels announced in `hello` (agent.yaml `labels`).
    labels: dict[str, str] = Factory(dict)
    # Seconds for TCP + TLS + WebSocket handshake, and for labd's `welcome`.
    connect_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_cap: float = 30.0
    # Seconds (to twice that) before retrying after labd refused our certificate (401/403).
    refused_backoff: float = 300.0
    # Seconds between SIGTERM and SIGKILL when an exec times out.
    kill_grace: float = 5.0
    # Renew the certificate at about two thirds of its lifetime.
    renew: bool = True
    # labd replicas to connect to, in order (agent.yaml `servers`, or LAB_AGENT_SERVERS=url1,url2);
    # after a failed or lost connection the agent tries the next one. Empty: the enrolled URL.
    servers: tuple[str, ...] = ()
    # Seconds between fetches of labd's signed audit checkpoint, kept in the state dir as a
    # witness (agent.yaml `audit_witness_interval`; lab.runtime.witness); 0 disables.
    audit_witness_interval: float = 3600.0


def parse_log_sources(text: str) -> dict[str, Path]:
    """``name=path,name2=path2`` → mapping; ConfigError for an entry without ``=``."""
    sources: dict[str, Path] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"{LOG_SOURCES_ENV}: {entry!r} is not name=path")
        sources[name.strip()] = Path(path.strip())
    return sources


def load_settings(state_dir: Path, environ: Mapping[str, str] | None = None) -> AgentSettings:
    """Settings from ``agent.yaml`` (``log_sources``, ``labels``) and the environment."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = state_dir / AGENT_FILE
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path} cannot be read: {exc}") from exc
        data = loaded if isinstance(loaded, dict) else {}
    sources = data.get("log_sources") or {}
    labels = data.get("labels") or {}
    if not isinstance(sources, dict) or not isinstance(labels, dict):
        raise ConfigError(f"{path}: log_sources and labels must be mappings")
    servers = data.get("servers") or []
    if not isinstance(servers, list):
        raise ConfigError(f"{path}: servers must be a list of labd URLs")
    if env.get(SERVERS_ENV):
        servers = [u.strip() for u in env[SERVERS_ENV].split(",") if u.strip()]
    for url in servers:
        endpoint(str(url))
    log_sources = {str(k): Path(str(v)) for k, v in sources.items()}
    log_sources.update(parse_log_sources(env.get(LOG_SOURCES_ENV, "")))
    witness = data.get("audit_witness_interval", 3600.0)
    if isinstance(witness, bool) or not isinstance(witness, int | float) or witness < 0:
        raise ConfigError(f"{path}: audit_witness_interval must be a number of seconds >= 0")
    return AgentSettings(
        state_dir=state_dir,
        log_sources=log_sources,
        labels={str(k): str(v) for k, v in labels.items()},
        servers=tuple(str(u) for u in servers),
        audit_witness_interval=float(witness),
    )


def heartbeat() -> Heartbeat:
    """Current load, uptime and memory of this machine (Linux ``/proc``; zeros elsewhere)."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    uptime = 0.0
    memory: dict[str, int] = {}
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                memory[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return Heartbeat(
        load=load,
        uptime=uptime,
        memory_total=memory.get("MemTotal", 0),
        memory_available=memory.get("MemAvailable", 0),
        version=__version__,
    )


E = TypeVar("E", bound=BaseException)


def _first(group: BaseExceptionGroup[E]) -> E:
    """The first leaf of an exception group (they nest when nurseries do)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc  # type: ignore[return-value]


def endpoint(server: str) -> tuple[str, int]:
    """``(host, port)`` of labd's ``https://HOST[:PORT]`` URL."""
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"labd URL {server!r} must be https://HOST:PORT")
    return parts.hostname, parts.port or 443


class Agent:
    """One agent process: connection driver, dispatcher per connection, renewal."""

    def __init__(self, settings: AgentSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self.identity: EnrolledIdentity | None = None
        self.session: AgentSession | None = None
        self._ws: WebSocketConnection | None = None
        self._dispatcher: Dispatcher | None = None
        self.ledger = Ledger(settings.state_dir)  # running commands, for the next agent
        self._changed = trio.Event()
        self.connections = 0  # welcomed sessions so far
        self.witnessed = 0  # audit checkpoints stored (lab.runtime.witness)
        self._welcomed_id: str | None = None
        self._server_index = 0  # which of settings.servers the next connection tries

    def current_server(self) -> str:
        """The labd URL the next (or current) connection uses."""
        assert self.identity is not None
        candidates = self.settings.servers or (self.identity.server,)
        return candidates[self._server_index % len(candidates)]

    @property
    def state(self) -> State:
        return State.DISCONNECTED if self.session is None else self.session.state

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self, after: int = 0) -> str:
        """Wait for a welcomed session (the ``after``-th one or later); its session id."""
        while True:
            session = self.session
            if (
                session is not None
                and session.state is State.CONNECTED
                and self.connections > after
                and session.session_id is not None
            ):
                return session.session_id
            await self._changed.wait()

    async def wait_state(self, state: State) -> None:
        while self.state is not state:
            await self._changed.wait()

    # --- the whole agent ---

    async def run(
        self,
        *,
        shutdown: trio.Event | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and serve until ``shutdown`` is set (forever without one).

        Raises :class:`Unauthenticated` when the agent never enrolled and :class:`ConfigError`
        for unusable state. On shutdown, running process groups are killed and the connection
        closes with 1000. ``task_status.started()`` once the identity is loaded.
        """
        from lab.agent.cli import gather_facts

        identity = load_enrolled(self.settings.state_dir)
        endpoint(identity.server)
        self.identity = identity
        self.ledger.kill_leftovers()
        hello = Hello(version=__version__, facts=gather_facts(), labels=self.settings.labels)
        self.session = AgentSession(
            hello,
            random=self._rng.random,
            backoff_initial=self.settings.backoff_initial,
            backoff_cap=self.settings.backoff_cap,
            connect_timeout=self.settings.connect_timeout,
            refused_backoff=self.settings.refused_backoff,
        )
        async with trio.open_nursery() as nursery:
            if self.settings.renew:
                nursery.start_soon(self._renew_loop)
            if self.settings.audit_witness_interval > 0:
                nursery.start_soon(self._witness_loop)
            nursery.start_soon(self._drive)
            task_status.started()
            if shutdown is None:
                await trio.sleep_forever()
            else:
                await shutdown.wait()
            await self._stop()
            nursery.cancel_scope.cancel()

    async def _stop(self) -> None:
        assert self.session is not None
        commands = self.session.stop()
        self._notify()
        if self._dispatcher is not None:
            self._dispatcher.cancel_all()
        ws = self._ws
        for command in commands:
            if isinstance(command, Close) and ws is not None:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose(int(command.code), command.reason)
        log.info("lab-agent stopped")

    # --- connection driver ---

    async def _drive(self) -> None:
        session = self.session
        assert session is not None
        commands = session.start(trio.current_time())
        while True:
            if any(isinstance(c, Connect) for c in commands):
                refused = await self._connection()
                session.connection_lost(trio.current_time(), refused=refused)
                self._notify()
            deadline = session.next_deadline()
            if deadline is None:
                return  # stopped
            log.debug("reconnecting in %.1fs", max(0.0, deadline - trio.current_time()))
            await trio.sleep_until(deadline)
            commands = session.timer(trio.current_time())

    def _ssl_context(self) -> ssl.SSLContext:
        from lab import pki
        from lab.agent.identity import ENROLL_HINT

        # Read every time: renewal replaces cert.pem and ca.pem underneath us.
        creds = load_credentials(self.settings.state_dir, hint=ENROLL_HINT)
        return pki.client_ssl_context(
            creds.ca_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem, alpn=["http/1.1"]
        )

    async def _connection(self) -> bool:
        """One connection attempt and, if it opens, the whole session on it.

        Returns True when labd refused our certificate at the handshake (401/403).
        """
        refused = False
        assert self.identity is not None
        server = self.current_server()
        host, port = endpoint(server)
        stream: trio.SSLStream[trio.SocketStream] | None = None
        try:
            # trio-websocket's reader task (in this nursery) raises a refused handshake and
            # lost connections, so they come out of the nursery as exception groups.
            async with trio.open_nursery() as nursery:
                ws, stream = await connect(
                    nursery,
                    host,
                    port,
                    self._ssl_context(),
                    connect_timeout=self.settings.connect_timeout,
                )
                self._ws = ws
                try:
                    await self._serve(ws)
                finally:
                    self._ws = None
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.aclose()
                nursery.cancel_scope.cancel()  # the reader task
        except* LabError as group:
            log.error("cannot connect: %s", _first(group).message)
        except* HandshakeError as group:
            exc = _first(group)
            status = getattr(exc, "status_code", None)
            # connect says why in the message (lab.agent.wsconnect.connect_failure).
            why = f"refused with HTTP {status}" if status else str(exc) or repr(exc)
            refused = status in (401, 403)
            if refused:
                log.error(
                    "labd refused this agent's certificate (HTTP %s; revoked or not allowed):"
                    " retrying in minutes; enroll again with a new token",
                    status,
                )
            else:
                log.warning("cannot connect to %s: %s", server, why)
        except* (ConnectionClosed, ConnectionGone, trio.BrokenResourceError) as group:
            log.warning("connection to %s lost: %r", server, _first(group))
        finally:
            # Cluster mode: the replica may be gone for good; the next attempt tries another.
            self._server_index += 1
            if stream is not None:
                await trio.aclose_forcefully(stream)
        return refused

    async def _serve(self, ws: WebSocketConnection) -> None:
        session = self.session
        assert session is not None

        # One writer task owns the WebSocket's send side; streams only queue. A stream task
        # is cancelled whenever labd sends stream-cancel, and a cancellation that lands inside
        # a TLS send_all leaves the SSLStream broken for good (trio cannot know how much was
        # written): the whole connection would die with 1006. Cancelling a memory channel
        # send is harmless.
        outbox, queued = trio.open_memory_channel[str | bytes](OUTBOX_SIZE)

        async def send(item: Outgoing) -> None:
            try:
                await outbox.send(item if isinstance(item, bytes) else encode(item))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionGone("connection to labd closed") from None

        async def writer() -> None:
            async with queued:
                async for data in queued:
                    try:
                        await ws.send_message(data)
                    except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                        return  # the reader sees the closed connection and ends the session

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            dispatcher = Dispatcher(
                nursery,
                send,
                log_sources=self.settings.log_sources,
                kill_grace=self.settings.kill_grace,
                ledger=self.ledger,
            )
            self._dispatcher = dispatcher
            try:
                await self._execute(session.connected(trio.current_time()), ws, send, dispatcher)
                nursery.start_soon(self._timer, ws, send, dispatcher)
                await self._reader(ws, send, dispatcher)
            finally:
                self._dispatcher = None
                nursery.cancel_scope.cancel()

    async def _reader(
        self,
        ws: WebSocketConnection,
        send: SendFn,
        dispatcher: Dispatcher,
    ) -> None:
        session = self.session
        assert session is not None
        while True:
            try:
                data = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                log.info(
                    "connection closed: %s %s",
                    getattr(reason, "code", "?"),
                    getattr(reason, "reason", "") or "",
                )
                return
            try:
                if isinstance(data, str):
                    commands = session.received(decode(data), trio.current_time())
                    self._notify_welcome(session)
                    await self._execute(commands, ws, send, dispatcher)
                elif session.state is State.CONNECTED:
                    await dispatcher.data(decode_data(data))
                else:
                    raise ProtocolError("data before welcome")
            except ProtocolError as exc:
                log.warning("labd broke the protocol: %s", exc.message)
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose(int(exc.close_code), exc.message[:120])
                return
            except ConnectionGone:
                return

    def _notify_welcome(self, session: AgentSession) -> None:
        if session.state is State.CONNECTED and session.session_id != self._welcomed_id:
            self._welcomed_id = session.session_id
            self.connections += 1
            log.info("connected to labd (session %s)", session.session_id)
        self._notify()

    async def _timer(self, ws: WebSocketConnection, send: SendFn, dispatcher: Dispatcher) -> None:
        session = self.session
        assert session is not None
        try:
            while True:
                deadline = session.next_deadline()
                changed = self._changed
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await changed.wait()
                if deadline is not None and trio.current_time() >= deadline:
                    commands = session.timer(trio.current_time())
                    await self._execute(commands, ws, send, dispatcher)
        except ConnectionGone:
            return

    async def _execute(
        self,
        commands: list[Command],
        ws: WebSocketConnection,
        send: SendFn,
        dispatcher: Dispatcher,
    ) -> None:
        for command in commands:
            if isinstance(command, Send):
                await send(command.message)
            elif isinstance(command, SendHeartbeat):
                await send(heartbeat())
            elif isinstance(command, Deliver):
                await dispatcher.message(command.message)
            elif isinstance(command, Close):
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose(int(command.code), command.reason)
                self._notify()

    # --- audit witness ---

    async def wait_witnessed(self, count: int) -> None:
        """Wait until this agent stored ``count`` audit checkpoints since it started."""
        while self.witnessed < count:
            await self._changed.wait()

    async def _witness_loop(self) -> None:
        from lab.runtime.witness import run_witness

        async def fetch() -> Any:
            await self.wait_connected()  # labd is there
            return await self._get("/api/audit/witness")

        def stored() -> None:
            self.witnessed += 1
            self._notify()

        await run_witness(
            self.settings.audit_witness_interval,
            self.settings.state_dir,
            fetch,
            rng=self._rng,
            stored=stored,
        )

    async def _get(self, path: str) -> Any:
        """GET ``path`` from the current labd over this agent's mTLS identity."""

        ctx = self._ssl_context()
        async with LabClient(self.current_server(), ssl_context=ctx, timeout=30.0) as client:
            return await client.get(path)

    # --- certificate renewal ---

    async def _renew_loop(self) -> None:
        await keep_renewed(self._validity, self._renew, rng=self._rng, log=log, what="lab-agent")

    def _validity(self) -> tuple[datetime, datetime]:
        identity = load_enrolled(self.settings.state_dir)
        return identity.not_before, identity.not_after

    async def _renew(self) -> None:
        renewed = await renew(self.settings.state_dir)
        self.identity = renewed
        log.info("certificate renewed, valid until %s", renewed.not_after.isoformat())


async def run_agent(
    settings: AgentSettings,
    *,
    shutdown: trio.Event | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an agent until ``shutdown``; ``task_status.started(agent)`` once it is loaded."""
    agent = Agent(settings, rng=rng)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: agent.run(shutdown=shutdown, task_status=task_status)
        )
        task_status.started(agent)


# --- pid file (lab-agent run holds it, lab-agent status reads it; lab.runtime.pidfile) ---

PROGRAMS = ("lab-agent", "lab.agent.main")
"""How a command line names the agent (console script or ``python -m``)."""


def hold_pid_file(state_dir: Path) -> AbstractContextManager[Path]:
    """Hold ``<state dir>/lab-agent.pid`` (locked, with our pid) while ``run`` runs.

    Raises :class:`lab.errors.Conflict` when another agent holds it.
    """
    from lab.runtime.pidfile import hold

    return hold(state_dir / PID_FILE)


def running_pid(state_dir: Path) -> int | None:
    """The pid of a live ``lab-agent run`` for ``state_dir``, if there is one.

    Checked against the file lock and /proc (start time, command line): a reused or foreign
    pid is not reported.
    """
    from lab.runtime.pidfile import inspect

    status = inspect(state_dir / PID_FILE, PROGRAMS)
    return status.pid if status.running else None
