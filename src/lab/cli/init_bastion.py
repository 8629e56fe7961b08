"""labctl init bastion standalone start|stop|status: lab-bastion in the background."""

from __future__ import annotations

from cyclopts import App

from lab.cli.output import OutputOpt

bastion_app = App(name="bastion", help="lab-bastion, the PXE server.")
standalone_app = App(name="standalone", help="Run one lab-bastion on this box, on SQLite.")
bastion_app.command(standalone_app)


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

    Parameters
    ----------
    interface
        The only interface DHCP is answered on; without it, HTTP only.
    no_dhcp
        Never start dnsmasq.
    mode
        proxy beside an existing DHCP server (default) or dhcp with --dhcp-range.
    dhcp_range
        start,end[,lease] for --mode dhcp.
    wait
        Seconds to wait until the bastion answers /healthz.
    """
    from lab.local.bastion import standalone
    from lab.local.daemonize import start_healthy
    from lab.runtime.exits import handle

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
        daemon = standalone()
        daemon.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pid = start_healthy(daemon, *args, wait=wait)
    print(f"lab-bastion started (pid {pid}) at {daemon.url}; log: {daemon.log_file}")
    print(f"admin token: {daemon.data_dir / 'admin-token'}")


@standalone_app.command
def stop() -> None:
    """Stop the background lab-bastion (SIGTERM, then SIGKILL after 15 s).

    Example: labctl init bastion standalone stop
    """
    from lab.local.bastion import standalone
    from lab.local.daemonize import stop_command

    stop_command(standalone())


@standalone_app.command
def status(*, output: OutputOpt = "") -> None:
    """Show whether the background lab-bastion runs and answers /healthz.

    Example: labctl init bastion standalone status -o json
    """
    from lab.cli.output import check_format
    from lab.local.bastion import standalone
    from lab.local.daemonize import status_command

    fmt = check_format(output)
    daemon = standalone()
    status_command(daemon, fmt=fmt, extra={"log": str(daemon.log_file)})
