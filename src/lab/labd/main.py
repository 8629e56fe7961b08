"""labd's command line: ``labd`` serves until SIGTERM or SIGINT, ``labd secrets rotate``.

This module is only the cyclopts app: the commands live in lab.labd.server, registered by
import path, which cyclopts imports when one of them runs. ``labd --help`` and
``labd --version`` thus answer without loading the server stack (quart, hypercorn, the whole
API: most of a second of imports).
"""

from __future__ import annotations

from cyclopts import App

from lab import __version__
from lab.runtime.commandline import run_app

app = App(
    name="labd",
    help="The labctl master daemon: REST and WebSocket API, built-in CA, RBAC, audit, agent hub."
    "\n\nIt takes its settings from LABD_CONFIG (else /etc/lab/labd.yaml when it exists) and "
    "LABD_* environment variables, and serves until SIGTERM or SIGINT. Exit codes: 0 stopped, "
    "1 start-up failure, 2 bad command line, 3 port in use, 4 data dir unusable, 5 database "
    "unreachable, 6 missing extra (docs/operations.md).\n\nExample: LABD_PORT=3100 labd",
    usage="Usage: labd [--help | --version | secrets rotate]",
    version=f"labd {__version__}",
    version_flags=["--version", "-V"],
    help_flags=["--help", "-h"],
)

# `labd` runs it (the default below); hidden, as labd does nothing else.
app.command("lab.labd.server:serve", name="serve", show=False)


@app.default
def serve() -> None:
    """Serve until SIGTERM or SIGINT (the only thing labd does)."""
    command = app["serve"].default_command  # imports lab.labd.server
    assert command is not None
    command()


secrets_app = App(
    name="secrets",
    help="The secrets store (kubeconfigs, k3s tokens): see docs/clusters.md.",
)
secrets_app.command(
    "lab.labd.server:rotate",
    help="Re-seal every secret under a new data key wrapped by the current key-encryption key.",
)
app.command(secrets_app)


def main() -> None:
    run_app(app, program="labd")


if __name__ == "__main__":
    main()
