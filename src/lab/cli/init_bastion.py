"""labctl init bastion standalone start|stop|status: lab-bastion in the background."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

bastion_app = App(name="bastion", help="lab-bastion, the PXE server.")
standalone_app = App(name="standalone", help="Run one lab-bastion on this box, on SQLite.")
bastion_app.command(standalone_app)

OutputOpt = Annotated[str, Parameter(name=["-o", "--output"], help="table or json")]


def _paths() -> tuple[Path, Path, str]:
    """(pid file, log file, local URL) of the standalone bastion, from its own settings."""
    from lab.bastion.config import load

    cfg = load()
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host  # noqa: S104
    data = cfg.data_path
    return data / "lab-bastion.pid", data / "lab-bastion.log", f"http://{host}:{cfg.port}"


@standalone_app.command
def start(
    *,
    interface: str | None = None,
    no_dhcp: bool = False,
    mode: str | None = None,
    dhcp_range: str | None = None,
    wait: float = 20.0,
) -> None:
    """Start lab-bastion in the background (pid and log file in its data dir).

    Reads the same LAB_BASTION_* variables as lab-bastion; without --interface it serves
    HTTP only (no DHCP). Example: labctl init bastion standalone start --interface eno1
    """
    import os

    from lab.cli.daemonize import python_argv, require_started, start_background
    from lab.cli.errors import handle
    from lab.cli.health import wait_healthy

    args: list[str] = []
    if interface:
        args += ["--interface", interface]
    if no_dhcp:
        args.append("--no-dhcp")
    if mode:
        args += ["--mode", mode]
    if dhcp_range:
        args += ["--dhcp-range", dhcp_range]
    with handle():
        pid_file, log_file, url = _paths()
        pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = dict(os.environ)
        env["LAB_BASTION_DATA_DIR"] = str(pid_file.parent)
        pid = start_background(
            python_argv("lab.bastion.main", *args), pid_file=pid_file, log_file=log_file, env=env
        )
        wait_healthy(url, timeout=wait, alive=lambda: require_started(pid, log_file))
    print(f"lab-bastion started (pid {pid}) at {url}; log: {log_file}")
    print(f"admin token: {pid_file.parent / 'admin-token'}")


@standalone_app.command
def stop() -> None:
    """Stop the background lab-bastion (SIGTERM, then SIGKILL after 15 s).

    Example: labctl init bastion standalone stop
    """
    from lab.cli.daemonize import stop_background

    pid_file, _, _ = _paths()
    pid = stop_background(pid_file)
    print("lab-bastion is not running" if pid is None else f"lab-bastion stopped (pid {pid})")


@standalone_app.command
def status(*, output: OutputOpt = "table") -> None:
    """Show whether the background lab-bastion runs and answers /healthz.

    Example: labctl init bastion standalone status -o json
    """
    import json

    from lab.cli.daemonize import read_pid
    from lab.cli.health import is_healthy

    pid_file, log_file, url = _paths()
    pid = read_pid(pid_file)
    healthy = pid is not None and is_healthy(url)
    report = {
        "running": pid is not None,
        "pid": pid,
        "url": url,
        "healthy": healthy,
        "log": str(log_file),
    }
    if output == "json":
        print(json.dumps(report))
    else:
        state = "running" if pid else "not running"
        print(
            f"lab-bastion {state}" + (f" (pid {pid}) at {url}, healthy: {healthy}" if pid else "")
        )
