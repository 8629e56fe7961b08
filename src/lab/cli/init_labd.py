"""labctl init labd standalone start|stop|status."""

from __future__ import annotations

from pathlib import Path

from cyclopts import App

from lab.cli.output import OutputOpt

standalone_app = App(name="standalone", help="Run one labd on this box, on SQLite.")


@standalone_app.command
def start(*, wait: float = 20.0) -> None:
    """Start labd in the background (pid and log file in its data dir) and wait until healthy.

    Reads the same LABD_* variables as labd. Refuses to start a second one.
    Example: labctl init labd standalone start

    Parameters
    ----------
    wait
        Seconds to wait until labd answers /healthz.
    """
    from lab.local import labd
    from lab.runtime.exits import handle

    with handle():
        daemon = labd.standalone()
        pid = labd.start(daemon, wait=wait)
    print(f"labd started (pid {pid}) at {daemon.url}; log: {daemon.log_file}")
    with handle():
        _login_local_admin(daemon.data_dir, daemon.url)


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
    from lab.local.daemonize import stop_command
    from lab.local.labd import standalone

    stop_command(standalone())


@standalone_app.command
def status(*, output: OutputOpt = "") -> None:
    """Show whether the background labd runs and is healthy.

    Example: labctl init labd standalone status -o json
    """
    from lab.cli.output import check_format
    from lab.local.daemonize import status_command
    from lab.local.labd import standalone

    fmt = check_format(output)
    status_command(standalone(), fmt=fmt)
