"""The ``lab-agent`` console script: :data:`lab.agent.cli.app` plus ``run`` and ``status``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from lab.agent.cli import app


async def run(
    *,
    state_dir: Path | None = None,
    log_level: str = "info",
    log_format: str = "text",
) -> None:
    """Connect to labd and serve exec and log requests until SIGTERM or SIGINT.

    Loads the identity written by `lab-agent enroll`, keeps one mTLS WebSocket to labd
    (reconnecting with backoff), sends heartbeats, runs commands, streams logs and renews the
    certificate at two thirds of its life. Holds <state dir>/lab-agent.pid (locked) while it
    runs, so a second agent on the same state dir refuses to start. Log
    sources come from `log_sources` in agent.yaml or LAB_AGENT_LOG_SOURCES=name=path,...

    Example: lab-agent run --state-dir /var/lib/lab-agent

    Parameters
    ----------
    state_dir
        Where the identity lives (default: LAB_AGENT_STATE_DIR, /var/lib/lab-agent as root,
        else ~/.local/share/lab-agent).
    log_level
        debug, info, warning or error.
    log_format
        text or json.
    """
    from functools import partial

    import trio

    from lab.agent.daemon import Agent, hold_pid_file, load_settings
    from lab.agent.identity import default_state_dir
    from lab.runtime import sdnotify
    from lab.runtime.entry import startup_errors
    from lab.runtime.logs import setup_logging
    from lab.runtime.shutdown import watch_signals

    setup_logging(log_level, log_format)
    directory = state_dir or default_state_dir()
    with startup_errors("lab-agent"):
        agent = Agent(load_settings(directory))
        shutdown = trio.Event()
        # Locked before connecting: a second agent on this state dir stops here.
        with hold_pid_file(directory):
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_signals, shutdown)
                await nursery.start(sdnotify.watchdog)
                nursery.start_soon(sdnotify.announce_stopping, shutdown)
                await nursery.start(partial(agent.run, shutdown=shutdown))
                # Ready once the identity is loaded: waiting for labd would fail the unit's
                # start whenever labd is down, and the agent reconnects on its own.
                sdnotify.ready(f"identity loaded from {directory}")
                await shutdown.wait()
                nursery.cancel_scope.cancel()


def status(
    *,
    state_dir: Path | None = None,
    output: Annotated[str, Parameter(name=["--output", "-o"])] = "table",
) -> None:
    """Show the agent's state directory, identity, labd URL and whether `run` is running.

    Example: lab-agent status -o json

    Parameters
    ----------
    state_dir
        The state directory to inspect (default as for `lab-agent run`).
    output
        table, json or yaml.
    """
    from lab.agent.daemon import running_pid
    from lab.agent.identity import default_state_dir, load_enrolled
    from lab.runtime.exits import handle
    from lab.runtime.output import check_format, emit

    fmt = check_format(output)
    directory = state_dir or default_state_dir()
    with handle():
        identity = load_enrolled(directory)
    pid = running_pid(directory)
    info: dict[str, Any] = {
        "state_dir": str(directory),
        "server_name": identity.server_name,
        "server_id": identity.server_id,
        "server": identity.server,
        "cert_not_after": identity.not_after.isoformat(),
        "running": pid is not None,
        "pid": pid,
    }
    if fmt in ("table", "wide"):
        for key, value in info.items():
            print(f"{key + ':':<16}{'-' if value is None else value}")
        return
    emit(info, fmt)


# Registered at import, so whoever imports this module sees the whole command tree.
app.command(run, name="run")
app.command(status, name="status")


def main() -> None:
    from lab.runtime.commandline import run_app

    run_app(app, program="lab-agent")


if __name__ == "__main__":
    main()
