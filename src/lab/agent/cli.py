"""lab-agent's command line. ``lab.agent.main:main`` runs :data:`app`.

Commands are grouped by what they touch: enrollment (here) and the long-running connection
(``run``, ``status``; below). Heavy imports stay inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cyclopts import App

app = App(
    name="lab-agent",
    help="labctl's node agent: enroll once, then keep one mTLS connection to labd.",
    backend="trio",
)


def gather_facts() -> dict[str, Any]:
    """Small, cheap facts sent with enrollment (labd shows them in server details)."""
    import os
    import platform

    from lab import __version__

    return {
        "os": platform.system().lower(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
        "agent_version": __version__,
    }


@app.command
async def enroll(
    *,
    server: str,
    token: str,
    ca_fingerprint: str | None = None,
    insecure_trust_on_first_use: bool = False,
    hostname: str | None = None,
    state_dir: Path | None = None,
) -> None:
    """Enroll this machine with labd using a join token and store its certificate.

    labd's CA must match --ca-fingerprint (or pass --insecure-trust-on-first-use on a network
    you trust). The key, certificate, CA bundle and agent.yaml go to the state directory
    (LAB_AGENT_STATE_DIR; /var/lib/lab-agent as root, else ~/.local/share/lab-agent).

    Example: lab-agent enroll --server https://lab.example:3100 --token ID.SECRET
    --ca-fingerprint SHA256:3f9a...

    Parameters
    ----------
    server
        labd's URL, https://HOST:PORT.
    token
        An agent join token (labctl tokens create --kind agent).
    ca_fingerprint
        The expected SHA256 fingerprint of labd's CA.
    insecure_trust_on_first_use
        Trust whatever CA labd presents.
    hostname
        The server name to enroll as (default: this machine's host name).
    state_dir
        Where to keep the identity (default: LAB_AGENT_STATE_DIR or the default above).
    """
    import socket

    from lab.agent.identity import default_state_dir
    from lab.agent.identity import enroll as do_enroll
    from lab.cli.errors import handle

    directory = state_dir or default_state_dir()
    with handle():
        identity = await do_enroll(
            server,
            token,
            hostname=hostname or socket.gethostname().split(".")[0],
            facts=gather_facts(),
            ca_fingerprint=ca_fingerprint,
            tofu=insecure_trust_on_first_use,
            state_dir=directory,
        )
    print(
        f"enrolled as {identity.subject} (id {identity.server_id}) with {identity.server}; "
        f"certificate valid until {identity.not_after.isoformat()}"
    )
    print(f"identity stored in {directory}", file=sys.stderr)


# --- the long-running agent: `run` (connect, heartbeat, exec, logs, renew) and `status` ---
# They are defined here with @app.command, next to enroll. `run` renews the certificate
# with lab.agent.identity.renew after lab.agent.identity.renewal_delay(...) seconds.
