"""The agent's identity: enrollment with a join token, renewal, and when to renew.

The state directory (``LAB_AGENT_STATE_DIR``; ``/var/lib/lab-agent`` as root, else
``~/.local/share/lab-agent``) holds ``key.pem`` (0600), ``cert.pem``, ``ca.pem`` and
``agent.yaml`` (labd's URL, the server id and name labd gave us). The key never leaves the
machine; renewal signs a new CSR with the same key and swaps ``cert.pem`` atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from attrs import frozen

from lab.client.api import enroll_identity, renew_in_place
from lab.client.credentials import load_credentials, write_atomic
from lab.errors import ConfigError, Unauthenticated

# When to renew is one rule for every identity; the agent's callers import it from here.
from lab.runtime.renewal import renewal_delay as renewal_delay

STATE_DIR_ENV = "LAB_AGENT_STATE_DIR"
AGENT_FILE = "agent.yaml"
ENROLL_HINT = "run `lab-agent enroll --server URL --token TOKEN`"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$LAB_AGENT_STATE_DIR``, else ``/var/lib/lab-agent`` as root, else the user's data dir."""
    env = os.environ if environ is None else environ
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV]).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/lab-agent")
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lab-agent"


@frozen(kw_only=True)
class EnrolledIdentity:
    """What ``agent.yaml`` records plus the certificate's validity."""

    server: str
    server_id: str
    server_name: str
    ca_fingerprint: str
    not_before: datetime
    not_after: datetime
    state_dir: Path

    @property
    def subject(self) -> str:
        return f"server/{self.server_name}"


def _write_agent_file(state_dir: Path, data: dict[str, Any]) -> None:

    text = yaml.safe_dump(data, sort_keys=True).encode("utf-8")
    write_atomic(state_dir / AGENT_FILE, text, mode=0o600)


def read_agent_file(state_dir: Path) -> dict[str, Any]:
    """``agent.yaml`` as a mapping; Unauthenticated when the agent never enrolled."""
    path = state_dir / AGENT_FILE
    if not path.is_file():
        raise Unauthenticated(
            f"this agent is not enrolled ({path} is missing)",
            details={"reason": "not_enrolled", "hint": ENROLL_HINT},
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("server"), str):
        raise ConfigError(f"{path} has no server URL", details={"hint": ENROLL_HINT})
    return data


def load_enrolled(state_dir: Path) -> EnrolledIdentity:
    """The stored identity; raises Unauthenticated when not enrolled, ConfigError if broken."""
    from lab import pki

    data = read_agent_file(state_dir)
    creds = load_credentials(state_dir, hint=ENROLL_HINT)
    info = pki.cert_info(creds.cert_pem)
    return EnrolledIdentity(
        server=data["server"],
        server_id=str(data.get("server_id", "")),
        server_name=str(data.get("server_name", "")),
        ca_fingerprint=str(data.get("ca_fingerprint", "")),
        not_before=info.not_before,
        not_after=info.not_after,
        state_dir=state_dir,
    )


async def enroll(
    server: str,
    token: str,
    *,
    hostname: str,
    facts: Mapping[str, Any],
    ca_fingerprint: str | None,
    tofu: bool,
    state_dir: Path,
    request_timeout: float = 30.0,
) -> EnrolledIdentity:
    """Enroll this machine with labd: trust its CA, trade ``token`` + a CSR for a certificate.

    labd's CA must have ``ca_fingerprint`` unless ``tofu`` (there is nobody to ask on a
    freshly installed machine). Writes ``key.pem`` (0600), ``cert.pem``, ``ca.pem`` and
    ``agent.yaml`` into ``state_dir`` (0700) only after labd accepted the token, so a failed
    attempt leaves an earlier identity intact.

    Raises :class:`Unauthenticated` (CA not trusted; token bad, expired, used or revoked),
    :class:`Invalid` (URL, fingerprint, hostname), :class:`RateLimited`, :class:`Unavailable`.
    Cancellation abandons the request and writes nothing.
    """

    enrolled = await enroll_identity(
        server,
        token,
        route="/api/auth/enroll",
        subject=f"server/{hostname}",
        fields={"hostname": hostname, "facts": dict(facts)},
        directory=state_dir,
        ca_fingerprint=ca_fingerprint,
        tofu=tofu,
        auth_hint="ask an admin for a new token: labctl tokens create --kind agent",
        request_timeout=request_timeout,
    )
    server_name = str(enrolled.body.get("server_name") or hostname)
    server_id = str(enrolled.body.get("server_id", ""))
    _write_agent_file(
        state_dir,
        {
            "server": enrolled.server,
            "server_id": server_id,
            "server_name": server_name,
            "ca_fingerprint": enrolled.ca_fingerprint,
            "enrolled_at": datetime.now(UTC).isoformat(),
        },
    )
    return EnrolledIdentity(
        server=enrolled.server,
        server_id=server_id,
        server_name=server_name,
        ca_fingerprint=enrolled.ca_fingerprint,
        not_before=enrolled.cert.not_before,
        not_after=enrolled.cert.not_after,
        state_dir=state_dir,
    )


async def renew(
    state_dir: Path, server: str | None = None, *, request_timeout: float = 30.0
) -> EnrolledIdentity:
    """Renew the agent's certificate over mTLS (``POST /api/auth/renew``) with the same key.

    ``server`` defaults to the one in ``agent.yaml``. ``cert.pem`` and ``ca.pem`` (labd's
    current bundle, which picks up a CA rotation) are replaced atomically. Raises
    :class:`Unauthenticated` when not enrolled or the current certificate is refused (expired,
    revoked: enroll again), :class:`Unavailable` when labd cannot be reached. Cancellation
    abandons the request and leaves the files as they were.
    """

    data = read_agent_file(state_dir)
    await renew_in_place(state_dir, server or data["server"], request_timeout=request_timeout)
    return load_enrolled(state_dir)
