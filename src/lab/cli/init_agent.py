"""labctl init agent standalone start|stop|status: this box as an agent of the configured labd.

``start`` enrolls the box once (a one-time agent token created with the user's own identity),
then runs ``lab-agent run`` in the background with its pid and log file in the agent's state
directory (``LAB_AGENT_STATE_DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclopts import App

from lab.cli.output import OutputOpt

if TYPE_CHECKING:
    from lab.cli.daemonize import Standalone

agent_app = App(name="agent", help="lab-agent, the node agent.")
standalone_app = App(name="standalone", help="Run lab-agent on this box against labd.")
agent_app.command(standalone_app)


# Long enough to enroll right away, short enough that a leaked token is soon useless.
TOKEN_TTL_SECONDS = 600


def _daemon() -> Standalone:
    """The local agent: ``lab-agent run`` with its pid and log file in its state directory."""
    from lab.agent.identity import STATE_DIR_ENV, default_state_dir
    from lab.cli.daemonize import Standalone

    return Standalone(
        name="lab-agent",
        module="lab.agent.main",
        data_dir=default_state_dir(),
        data_env=STATE_DIR_ENV,
    )


def _enrolled(state: Path) -> dict[str, Any] | None:
    """The agent's ``agent.yaml`` when this box is enrolled, else None."""
    from lab.agent.identity import AGENT_FILE, read_agent_file

    if not (state / AGENT_FILE).is_file():
        return None
    return read_agent_file(state)


def _trusted_fingerprint() -> str:
    """The fingerprint of labd's CA as the user's own ``ca.pem`` (from ``labctl login``) has it."""
    from lab import pki
    from lab.client.api import LOGIN_HINT
    from lab.client.contexts import identity_dir
    from lab.client.credentials import load_credentials

    creds = load_credentials(identity_dir(), hint=LOGIN_HINT)
    return pki.load_ca_bundle(creds.ca_pem)[0].fingerprint()


async def _enroll(server: str, name: str, state: Path) -> dict[str, Any]:
    """Create a one-time agent token with the user's identity and enroll ``name`` with it.

    Enrollment runs in this process (the code ``lab-agent enroll`` runs) so the token never
    appears in a process list.
    """
    from lab.agent.cli import gather_facts
    from lab.agent.identity import enroll
    from lab.client.api import LabClient

    async with LabClient.from_settings() as client:
        record = await client.post(
            "/api/tokens",
            {
                "kind": "agent",
                "hostname": name,
                "ttl_seconds": TOKEN_TTL_SECONDS,
                "description": f"labctl init agent standalone ({name})",
            },
        )
    identity = await enroll(
        server,
        str(record["token"]),
        hostname=name,
        facts=gather_facts(),
        ca_fingerprint=_trusted_fingerprint(),
        tofu=False,
        state_dir=state,
    )
    return {"server": identity.server, "server_name": identity.server_name}


async def _server_status(name: str) -> str | None:
    """``online``/``offline`` as labd sees server ``name``; None when labd cannot tell us."""
    from urllib.parse import quote

    from lab.client.api import LabClient
    from lab.errors import LabError

    try:
        async with LabClient.from_settings() as client:
            item = await client.get(f"/api/servers/{quote(name, safe='')}")
    except LabError:
        return None
    status = item.get("status") if isinstance(item, dict) else None
    return status if isinstance(status, str) else None


async def _wait_online(name: str, pid: int, log_file: Path) -> None:
    """Return once labd sees ``name`` online; raises Unavailable if the agent exits first.

    Polls until then: bound it with ``trio.move_on_after``.
    """
    import trio

    from lab.cli.daemonize import require_started

    while True:
        require_started(pid, log_file)
        if await _server_status(name) == "online":
            return
        await trio.sleep(0.2)


@standalone_app.command
async def start(*, name: str | None = None, wait: float = 20.0) -> None:
    """Enroll this box (once) and run lab-agent in the background against labd.

    Uses labd from `labctl config get server` and your identity (an admin's, to create the
    one-time agent token). State, pid file and log live in LAB_AGENT_STATE_DIR. Refuses to
    start a second agent.

    Example: labctl init agent standalone start --name homelab1

    Parameters
    ----------
    name
        The server name to enroll as (default: this machine's short host name).
    wait
        Seconds to wait until labd sees the agent online (0: do not wait).
    """
    import socket

    import trio

    from lab.cli.daemonize import read_pid, require_started, spawn
    from lab.cli.progress import Spinner
    from lab.client.settings import load_settings
    from lab.errors import Conflict, Unavailable
    from lab.runtime.exits import handle

    with handle():
        daemon = _daemon()
        state, log_file = daemon.data_dir, daemon.log_file
        running = read_pid(daemon.pid_file, daemon.programs)
        if running is not None:
            raise Conflict(
                f"lab-agent is already running (pid {running})",
                details={"hint": "labctl init agent standalone stop"},
            )
        server = load_settings().server.rstrip("/")
        enrolled = _enrolled(state)
        if enrolled is None:
            enrolled = await _enroll(server, name or socket.gethostname().split(".")[0], state)
            print(f"enrolled as server/{enrolled['server_name']} with {server}")
        elif str(enrolled.get("server", "")).rstrip("/") != server:
            raise Conflict(
                f"this agent is enrolled with {enrolled.get('server')}, not {server}",
                details={"hint": f"set LAB_AGENT_STATE_DIR elsewhere, or remove {state}"},
            )
        agent_name = str(enrolled.get("server_name") or "")
        pid = spawn(daemon, "run")
        if wait > 0:
            what = f"waiting for labd to see server/{agent_name} online"
            with Spinner(what), trio.move_on_after(wait) as waited:
                await _wait_online(agent_name, pid, log_file)
            if waited.cancelled_caught:
                raise Unavailable(
                    f"lab-agent (pid {pid}) runs but server/{agent_name} is not online "
                    f"after {wait:.0f}s",
                    details={"hint": f"see {log_file}; labctl init agent standalone status"},
                )
        else:
            require_started(pid, log_file)
    print(f"lab-agent started (pid {pid}) as server/{agent_name}; log: {log_file}")


@standalone_app.command
def stop() -> None:
    """Stop the background lab-agent (SIGTERM, then SIGKILL after 15 s).

    Example: labctl init agent standalone stop
    """
    from lab.cli.daemonize import stop_command

    stop_command(_daemon())


@standalone_app.command
async def status(*, output: OutputOpt = "") -> None:
    """Show whether the background lab-agent runs and whether labd sees it online.

    -o json prints {"running", "pid", "server", "name", "online"}; online is null when labd
    cannot be asked.

    Example: labctl init agent standalone status -o json
    """

    from lab.cli.daemonize import read_pid
    from lab.cli.output import check_format
    from lab.client.settings import load_settings
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        daemon = _daemon()
        pid = read_pid(daemon.pid_file, daemon.programs)
        enrolled = _enrolled(daemon.data_dir)
        server = str(enrolled["server"]) if enrolled else load_settings().server
        name: str | None = None
        if enrolled and enrolled.get("server_name"):
            name = str(enrolled["server_name"])
    online: bool | None = False
    if name is not None:
        seen = await _server_status(name)
        online = None if seen is None else seen == "online"
    report: dict[str, Any] = {
        "running": pid is not None,
        "pid": pid,
        "server": server,
        "name": name,
        "online": online,
    }
    if is_data(fmt):
        emit(report, fmt)
        return
    state_text = f"running (pid {pid})" if pid is not None else "not running"
    who = f"server/{name}" if name else "not enrolled"
    seen_text = {True: "online", False: "offline", None: "unknown"}[online]
    print(
        f"lab-agent {state_text}; {who} at {server}; labd sees it {seen_text}; "
        f"log: {daemon.log_file}"
    )
