"""``lab-bastion``: the PXE server (default command ``serve``) and ``wheelhouse build``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import cyclopts

from lab import __version__

app = cyclopts.App(
    name="lab-bastion",
    help="labctl's PXE bastion: iPXE dispatch, kickstarts, discovery and supervised dnsmasq.",
    version=f"lab-bastion {__version__}",
    version_flags=["--version", "-V"],
    help_flags=["--help", "-h"],
)
wheelhouse_app = cyclopts.App(name="wheelhouse", help="The wheels installed machines use.")
app.command(wheelhouse_app)


@app.default
@app.command
def serve(
    *,
    config: Path | None = None,
    port: int | None = None,
    interface: str | None = None,
    no_dhcp: bool = False,
    mode: Literal["proxy", "dhcp"] | None = None,
    dhcp_range: str | None = None,
    data_dir: Path | None = None,
    log_format: Literal["text", "json"] | None = None,
) -> None:
    """Serve HTTP, and DHCP/TFTP through dnsmasq on ``--interface``.

    Example: ``lab-bastion --interface eno1`` (proxyDHCP beside the home router).

    Parameters
    ----------
    config
        YAML settings file (also ``LAB_BASTION_CONFIG``).
    port
        HTTP port (``LAB_BASTION_PORT``, default 8080).
    interface
        The only interface DHCP is answered on; without it, HTTP only.
    no_dhcp
        Never start dnsmasq.
    mode
        ``proxy`` beside an existing DHCP server (default) or ``dhcp`` with ``--dhcp-range``.
    dhcp_range
        ``start,end[,lease]`` for ``--mode dhcp``.
    data_dir
        Database, admin token, wheelhouse and TFTP root (``LAB_BASTION_DATA_DIR``).
    log_format
        ``text`` (default) or ``json`` lines on stderr (``LAB_BASTION_LOG_FORMAT``).
    """
    import attrs

    from lab.bastion import config as cfg
    from lab.bastion.server import serve_bastion
    from lab.runtime.entry import run_daemon
    from lab.runtime.logs import setup_logging

    overrides: dict[str, object] = {
        "port": port,
        "interface": interface,
        "dhcp_mode": mode,
        "dhcp_range": dhcp_range,
        "data_dir": str(data_dir) if data_dir else None,
        "log_format": log_format,
    }

    async def run(_: None) -> None:
        import trio

        from lab.runtime import sdnotify
        from lab.runtime.shutdown import watch_signals

        conf = cfg.load(config)
        conf = attrs.evolve(conf, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        if no_dhcp:
            conf = attrs.evolve(conf, no_dhcp=True)
        conf.check()
        setup_logging(conf.log_level, conf.log_format)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_signals, shutdown)
            await nursery.start(sdnotify.watchdog)
            nursery.start_soon(sdnotify.announce_stopping, shutdown)
            await serve_bastion(conf, shutdown_event=shutdown)
            nursery.cancel_scope.cancel()

    run_daemon("lab-bastion", run, None)


@app.command
def join(
    *,
    server: str,
    token: str,
    ca_fingerprint: str | None = None,
    insecure_trust_on_first_use: bool = False,
    name: str | None = None,
    data_dir: Path | None = None,
) -> None:
    """Join this bastion to labd, so installs carry a one-time agent join token.

    Trades a one-time admin user token for a bastion/NAME certificate and keeps it, with labd's
    CA and URL, in DATA_DIR/labd/. From the next start every install.ks embeds a fresh agent
    token from labd, and the phase watchdog asks labd before failing an install whose agent
    may have enrolled anyway. labd's CA must match --ca-fingerprint (or pass
    --insecure-trust-on-first-use on a trusted network).

    Example: ``lab-bastion join --server https://labd.lan:3100 --token ID.SECRET
    --ca-fingerprint SHA256:3f9a...``

    Parameters
    ----------
    server
        labd's URL, https://HOST:PORT.
    token
        A one-time user join token with the admin role
        (labctl tokens create --kind user --user NAME --roles admin).
    ca_fingerprint
        The expected SHA256 fingerprint of labd's CA (labctl ca show).
    insecure_trust_on_first_use
        Trust whatever CA labd presents.
    name
        This bastion's name in labd (default: the short host name).
    data_dir
        The bastion's data dir (``LAB_BASTION_DATA_DIR``).
    """
    import socket

    import trio

    from lab.bastion import config as cfg
    from lab.bastion.labd_link import join as join_labd
    from lab.runtime.exits import handle

    with handle():
        base = data_dir or cfg.load().data_path
        link = trio.run(
            partial(
                join_labd,
                base,
                server,
                token,
                name=name or socket.gethostname().split(".")[0].lower(),
                ca_fingerprint=ca_fingerprint,
                tofu=insecure_trust_on_first_use,
            )
        )
    print(f"joined {link.server} as bastion/{link.name} (CA {link.ca_fingerprint})")
    print(f"identity in {link.directory}; restart lab-bastion to use it")


@wheelhouse_app.command
def build(
    *,
    python: str = "3.11",
    platform: Annotated[tuple[str, ...], cyclopts.Parameter(consume_multiple=False)] = (),
    source: Path | None = None,
    requirement: str | None = None,
    data_dir: Path | None = None,
) -> None:
    """``pip download`` labctl and its dependencies into ``<data dir>/wheelhouse``.

    Example: ``lab-bastion wheelhouse build --python 3.13 --platform manylinux_2_28_x86_64``

    Parameters
    ----------
    python
        Python version of the installed machines (pip ``--python-version``).
    platform
        Target platform tag, repeatable (pip ``--platform``).
    source
        A labctl source tree to build the wheel from (default: this checkout, if editable).
    requirement
        A requirement to download instead, e.g. ``labctl==0.1.0``.
    data_dir
        The bastion's data dir (``LAB_BASTION_DATA_DIR``).
    """
    import sys

    from lab.bastion import config as cfg
    from lab.bastion import wheelhouse
    from lab.errors import LabError

    conf = cfg.load()
    base = data_dir or conf.data_path
    try:
        files = wheelhouse.build(
            base / "wheelhouse",
            python=python,
            platforms=platform,
            source=source,
            requirement=requirement,
        )
    except LabError as exc:
        print(f"lab-bastion: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"{len(files)} files in {base / 'wheelhouse'}")


def main() -> None:
    from lab.runtime.commandline import run_app

    run_app(app, program="lab-bastion")


if __name__ == "__main__":
    main()
