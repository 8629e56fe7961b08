"""labctl login and labctl whoami: get a user certificate with a join token, show who you are."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen

from lab.cli.output import OutputOpt

if TYPE_CHECKING:
    from lab.client.api import Confirm


@frozen(kw_only=True)
class LoginResult:
    server: str
    user: str
    roles: tuple[str, ...]
    ca_fingerprint: str
    not_after: str
    directory: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "user": self.user,
            "roles": list(self.roles),
            "ca_fingerprint": self.ca_fingerprint,
            "not_after": self.not_after,
            "directory": str(self.directory),
        }


async def login(
    server: str,
    token: str,
    *,
    username: str | None = None,
    ca_fingerprint: str | None = None,
    tofu: bool = False,
    confirm: Confirm | None = None,
    directory: Path | None = None,
    request_timeout: float = 30.0,
) -> LoginResult:
    """Enroll this user with labd and store the identity; the whole of ``labctl login``.

    Checks labd's CA (``ca_fingerprint``, else ``tofu``, else ``confirm(fingerprint, subject)``
    — see :func:`lab.client.api.establish_trust`), makes a new P-256 key and a CSR, trades it
    and ``token`` for a certificate of the user the token was made for (``username``, when
    given, must be that user: labd refuses another name; the name is taken from labd's
    answer, never from the local login), writes ``key.pem`` (0600), ``cert.pem`` and
    ``ca.pem`` into ``directory`` (default :func:`lab.client.home.home`, 0700) and sets the
    ``server`` and ``ca_fingerprint`` settings. Nothing is written unless enrollment succeeds.

    Raises :class:`Unauthenticated` (CA not trusted, token refused), :class:`Invalid`
    (bad URL, fingerprint or user name), :class:`RateLimited`, :class:`Unavailable`.
    Cancellation abandons the request; an existing identity is then left untouched.
    """
    from lab.client.api import enroll_identity
    from lab.client.contexts import login_target, remember

    context, default_directory = login_target(server)
    directory = directory or default_directory
    # labd chooses the certificate's subject; the CSR's is only a placeholder.
    enrolled = await enroll_identity(
        server,
        token,
        route="/api/auth/user-enroll",
        subject=f"user/{username or 'enrolling'}",
        fields={} if username is None else {"username": username},
        directory=directory,
        ca_fingerprint=ca_fingerprint,
        tofu=tofu,
        confirm=confirm,
        auth_hint="ask an admin for a new token: labctl tokens create --kind user",
        request_timeout=request_timeout,
    )
    body = enrolled.body
    # The certificate labd issued says who we are (its "user" field says the same).
    user = enrolled.cert.subject.removeprefix("user/")
    remember(context, server=enrolled.server, ca_fingerprint=enrolled.ca_fingerprint)
    return LoginResult(
        server=enrolled.server,
        user=user,
        roles=tuple(str(r) for r in body.get("roles") or ()),
        ca_fingerprint=enrolled.ca_fingerprint,
        not_after=enrolled.cert.not_after.isoformat(),
        directory=directory,
    )


def remembered_fingerprint(server: str, current: str, fingerprint: str) -> str | None:
    """The CA fingerprint labctl already trusts for ``server``: the current settings' when
    they are for it, else that of the context logged in to it before."""
    from lab.client import contexts
    from lab.client.home import read_context

    wanted = server.strip().rstrip("/")
    if current.rstrip("/") == wanted and fingerprint:
        return fingerprint
    name, _ = contexts.login_target(server)
    if name is not None and name in contexts.names():
        held = read_context(name)
        if str(held.get("server") or "").rstrip("/") == wanted and held.get("ca_fingerprint"):
            return str(held["ca_fingerprint"])
    return None


def _prompt(fingerprint: str, subject: str) -> bool:
    print(f"labd's CA is {subject!r} with fingerprint\n  {fingerprint}", file=sys.stderr)
    print("Compare it with `labctl ca show` on a machine you trust.", file=sys.stderr)
    try:
        answer = input("Trust this CA and log in? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


async def login_command(
    *,
    server: str,
    token: str,
    ca_fingerprint: str | None = None,
    insecure_trust_on_first_use: bool = False,
    username: str | None = None,
    output: OutputOpt = "",
) -> None:
    """Log in to labd with a join token: get a user certificate and trust labd's CA.

    labd's CA must match --ca-fingerprint; without it you are asked to confirm the fingerprint
    (outside a terminal the login is refused unless --insecure-trust-on-first-use). Logging in
    again to the same server checks the fingerprint remembered from last time.
    The key, certificate and CA bundle go to ~/.labctl (LABCTL_HOME).

    Example: labctl login --server https://lab.example:3100 --token ID.SECRET --ca-fingerprint
    SHA256:3f9a...

    Parameters
    ----------
    server
        labd's URL, https://HOST:PORT.
    token
        A user join token (labctl tokens create --kind user).
    ca_fingerprint
        The expected SHA256 fingerprint of labd's CA.
    insecure_trust_on_first_use
        Trust whatever CA labd presents (scripts on a trusted network only).
    username
        Your user name in labd; optional: the token names its user, and another name is refused.
    """
    from lab.cli.output import check_format
    from lab.client.settings import load_settings
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        settings = load_settings()
        if not ca_fingerprint and not insecure_trust_on_first_use:
            ca_fingerprint = remembered_fingerprint(
                server, settings.server, settings.ca_fingerprint
            )
        result = await login(
            server,
            token,
            username=username,
            ca_fingerprint=ca_fingerprint,
            tofu=insecure_trust_on_first_use,
            confirm=_prompt if sys.stdin.isatty() else None,
            request_timeout=settings.timeout,
        )
    if is_data(fmt):
        emit(result.as_dict(), fmt)
        return
    roles = ", ".join(result.roles) or "none"
    print(f"logged in to {result.server} as user/{result.user} (roles: {roles})")
    print(f"certificate valid until {result.not_after}; identity in {result.directory}")


async def whoami(*, output: OutputOpt = "") -> None:
    """Show who labd thinks you are: identity, roles and certificate expiry.

    Example: labctl whoami -o json
    """
    from datetime import UTC, datetime

    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.client.durations import format_duration
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            body = await client.get("/api/auth/whoami")
            server = client.server
    if is_data(fmt):
        emit({**body, "server": server}, fmt)
        return
    left = ""
    try:
        expiry = datetime.fromisoformat(str(body.get("not_after")))
        remaining = (expiry - datetime.now(UTC)).total_seconds()
        left = f" (in {format_duration(remaining)})" if remaining > 0 else " (expired)"
    except (TypeError, ValueError):
        pass
    roles = ", ".join(body.get("roles") or ()) or "none"
    print(f"{body.get('kind')}/{body.get('name')} at {server}")
    print(f"roles: {roles}")
    print(f"certificate {body.get('serial')} valid until {body.get('not_after')}{left}")


def logout() -> None:
    """Forget your identity for the current context (or --context NAME).

    Deletes the key, certificate and CA bundle labctl keeps for that labd (and the context
    itself); logging out when not logged in is not an error. The certificate stays valid in
    labd until it expires or an admin revokes it (labctl certs revoke user/NAME).

    Example: labctl logout
    """
    from lab.client import contexts
    from lab.client.credentials import CA_FILE, CERT_FILE, KEY_FILE
    from lab.client.home import home
    from lab.client.settings import load_settings
    from lab.runtime.exits import handle

    with handle():
        name = contexts.selected()
        server = load_settings().server
        if name is not None:
            contexts.remove(name)
            print(f"logged out of context {name} ({server})")
            return
        files = [home() / f for f in (KEY_FILE, CERT_FILE, CA_FILE)]
        if not any(f.exists() for f in files):
            print("not logged in", file=sys.stderr)
            return
        for file in files:
            file.unlink(missing_ok=True)
    print(f"logged out of {server}")
