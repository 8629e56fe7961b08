"""lab-agent's command line. ``lab.agent.main:main`` runs :data:`app`.

Commands are grouped by what they touch: enrollment (here) and the long-running connection
(``run``, ``status``; below). Heavy imports stay inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cyclopts import App

from lab import __version__

app = App(
    name="lab-agent",
    help="labctl's node agent: enroll once, then keep one mTLS connection to labd.",
    version=f"lab-agent {__version__}",
    version_flags=["--version", "-V"],
    help_flags=["--help", "-h"],
    backend="trio",
)


DMI_DIR = Path("/sys/class/dmi/id")


def hardware_ids(dmi_dir: Path = DMI_DIR) -> dict[str, str]:
    """The machine's DMI system UUID and serial, where readable (product_uuid and
    product_serial are root-only on most kernels); labd checks them against a join token's
    hardware binding. Values are trimmed and lowercased, as labd stores the binding."""
    found: dict[str, str] = {}
    for key, file in (("system_uuid", "product_uuid"), ("serial", "product_serial")):
        try:
            value = (dmi_dir / file).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if value and len(value) <= 128 and value.isprintable():
            found[key] = value.lower()
    return found


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
        **hardware_ids(),
    }


@app.command
async def enroll(
    *,
    server: str | None = None,
    token: str | None = None,
    ca_fingerprint: str | None = None,
    insecure_trust_on_first_use: bool = False,
    hostname: str | None = None,
    state_dir: Path | None = None,
    config: Path | None = None,
    if_needed: bool = False,
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
    config
        A YAML file with ``server``, ``token``, ``hostname`` and ``ca_fingerprint`` (what an
        installed machine gets from the bastion); options given on the command line win.
    if_needed
        Do nothing (exit 0) when the state directory already holds an identity.
    """
    import socket

    from lab.agent.identity import default_state_dir
    from lab.agent.identity import enroll as do_enroll
    from lab.errors import Invalid
    from lab.runtime.exits import handle

    directory = state_dir or default_state_dir()
    if if_needed and (directory / "cert.pem").exists():
        print(f"already enrolled (identity in {directory})")
        return
    with handle():
        given = _enroll_config(config) if config is not None else {}
        server = server or given.get("server")
        token = token or given.get("token")
        hostname = hostname or given.get("hostname")
        ca_fingerprint = ca_fingerprint or given.get("ca_fingerprint")
        if not server or not token:
            raise Invalid(
                "enroll needs --server and --token (or a --config file holding them)",
                details={"fields": ["server", "token"]},
            )
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


def _enroll_config(path: Path) -> dict[str, str]:
    """The enrolment settings a bastion install wrote (unknown keys are an error)."""
    from lab.errors import ConfigError
    from lab.runtime.config import read_yaml_mapping

    data = read_yaml_mapping(path)
    allowed = {"server", "token", "hostname", "ca_fingerprint"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: unknown keys {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}"
        )
    return {k: str(v) for k, v in data.items() if v is not None}


# --- the long-running agent: `run` (connect, heartbeat, exec, logs, renew) and `status` ---
# They are defined here with @app.command, next to enroll. `run` renews the certificate
# with lab.agent.identity.renew after lab.agent.identity.renewal_delay(...) seconds.
