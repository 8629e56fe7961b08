"""labctl init agent standalone start|stop|status: this box as an agent of the configured labd.

``start`` enrolls the box once (a one-time agent token created with the user's own identity),
then runs ``lab-agent run`` in the background with its pid and log file in the agent's state
directory (``LAB_AGENT_STATE_DIR``).
"""

from __future__ import annotations

from typing import Any

from cyclopts import App

from lab.cli.output import OutputOpt

agent_app = App(name="agent", help="lab-agent, the node agent.")
standalone_app = App(name="standalone", help="Run lab-agent on this box against labd.")
agent_app.command(standalone_app)


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

    from lab.client.settings import load_settings
    from lab.errors import Conflict, Unavailable
    from lab.local import agent
    from lab.local.daemonize import read_pid, require_started, spawn
    from lab.runtime.exits import handle
    from lab.runtime.progress import Spinner

    with handle():
        daemon = agent.standalone()
        state, log_file = daemon.data_dir, daemon.log_file
        running = read_pid(daemon.pid_file, daemon.programs)
        if running is not None:
            raise Conflict(
                f"lab-agent is already running (pid {running})",
                details={"hint": "labctl init agent standalone stop"},
            )
        server = load_settings().server.rstrip("/")
        enrolled = agent.enrolled(state)
        if enrolled is None:
            enrolled = await agent.enroll(server, name or socket.gethostname().split(".")[0], state)
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
                await agent.wait_online(agent_name, pid, log_file)
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
    from lab.local.agent import standalone
    from lab.local.daemonize import stop_command

    stop_command(standalone())


@standalone_app.command
async def status(*, output: OutputOpt = "") -> None:
    """Show whether the background lab-agent runs and whether labd sees it online.

    -o json prints {"running", "pid", "server", "name", "online"}; online is null when labd
    cannot be asked.

    Example: labctl init agent standalone status -o json
    """
    from lab.cli.output import check_format
    from lab.client.settings import load_settings
    from lab.local import agent
    from lab.local.daemonize import read_pid
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        daemon = agent.standalone()
        pid = read_pid(daemon.pid_file, daemon.programs)
        enrolled = agent.enrolled(daemon.data_dir)
        server = str(enrolled["server"]) if enrolled else load_settings().server
        name: str | None = None
        if enrolled and enrolled.get("server_name"):
            name = str(enrolled["server_name"])
    online: bool | None = False
    if name is not None:
        seen = await agent.server_status(name)
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
