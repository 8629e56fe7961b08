"""labctl init labd standalone start|stop|status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

standalone_app = App(name="standalone", help="Run one labd on this box, on SQLite.")

OutputOpt = Annotated[str, Parameter(name=["-o", "--output"], help="table or json")]


def _paths() -> tuple[Path, Path, str]:
    """(pid file, log file, local URL) of the standalone labd, from labd's own settings."""
    from lab.labd.config import load_labd_config

    cfg = load_labd_config()
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host  # noqa: S104
    return cfg.data_path / "labd.pid", cfg.data_path / "labd.log", f"https://{host}:{cfg.port}"


@standalone_app.command
def start(*, wait: float = 20.0) -> None:
    """Start labd in the background (pid and log file in its data dir) and wait until healthy.

    Reads the same LABD_* variables as labd. Refuses to start a second one.
    Example: labctl init labd standalone start
    """
    import os

    from lab.cli.daemonize import python_argv, require_started, start_background
    from lab.cli.errors import handle
    from lab.cli.health import wait_healthy
    from lab.labd.main import prepare_data_dir

    with handle():
        pid_file, log_file, url = _paths()
        prepare_data_dir(pid_file.parent)
        env = dict(os.environ)
        env["LABD_DATA_DIR"] = str(pid_file.parent)
        pid = start_background(
            python_argv("lab.labd.main"), pid_file=pid_file, log_file=log_file, env=env
        )
        wait_healthy(
            url,
            timeout=wait,
            alive=lambda: require_started(pid, log_file),
            cafile=pid_file.parent / "ca.pem",
        )
    print(f"labd started (pid {pid}) at {url}; log: {log_file}")
    with handle():
        _login_local_admin(pid_file.parent, url)


def _login_local_admin(data_dir: Path, url: str) -> None:
    """On labd's first start, log this user in as admin with the one-time bootstrap token.

    The token file is removed once used; later starts find none and leave the login alone.
    """
    import trio

    from lab import pki
    from lab.cli.login import login

    token_file = data_dir / "bootstrap-token"
    if not token_file.exists():
        return
    fingerprint = pki.load_ca_bundle((data_dir / "ca.pem").read_bytes())[0].fingerprint()
    token = token_file.read_text().strip()
    result = trio.run(lambda: login(url, token, ca_fingerprint=fingerprint))
    token_file.unlink()
    print(f"logged in to {url} as user/{result.user} ({', '.join(result.roles)})")


@standalone_app.command
def stop() -> None:
    """Stop the background labd (SIGTERM, then SIGKILL after 15 s).

    Example: labctl init labd standalone stop
    """
    from lab.cli.daemonize import stop_background

    pid_file, _, _ = _paths()
    pid = stop_background(pid_file)
    print("labd is not running" if pid is None else f"labd stopped (pid {pid})")


@standalone_app.command
def status(*, output: OutputOpt = "table") -> None:
    """Show whether the background labd runs and is healthy.

    Example: labctl init labd standalone status -o json
    """
    import json

    from lab.cli.daemonize import read_pid
    from lab.cli.health import is_healthy

    pid_file, _, url = _paths()
    pid = read_pid(pid_file)
    healthy = pid is not None and is_healthy(url, cafile=pid_file.parent / "ca.pem")
    report = {"running": pid is not None, "pid": pid, "url": url, "healthy": healthy}
    if output == "json":
        print(json.dumps(report))
    else:
        state = "running" if pid else "not running"
        print(f"labd {state}" + (f" (pid {pid}) at {url}, healthy: {healthy}" if pid else ""))
