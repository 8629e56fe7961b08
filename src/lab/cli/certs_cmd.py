"""labctl certs (issued certificates, revocation) and labctl ca (CA status and rotation)."""

from __future__ import annotations

import sys
from typing import Any

from cyclopts import App

from lab.cli.output import OutputOpt

certs_app = App(name="certs", help="Certificates labd issued: list and revoke.")
ca_app = App(name="ca", help="labd's certificate authority: status and rotation.")


CERT_COLUMNS = ("serial", "subject", "profile", "not_after", "revoked_at")
CERT_WIDE = ("not_before",)


@certs_app.command(name="list")
async def list_(*, subject: str | None = None, output: OutputOpt = "") -> None:
    """List issued certificates, optionally of one subject (server/NAME or user/NAME).

    Example: labctl certs list --subject server/web1

    Parameters
    ----------
    subject
        Only certificates of this identity.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            body = await client.get("/api/certs", params={"subject": subject} if subject else None)
    items = body.get("items", [])
    if is_data(fmt):
        emit(items, fmt)
    elif not items:
        print("no certificates", file=sys.stderr)
    else:
        emit(items, fmt, columns=CERT_COLUMNS, wide=CERT_WIDE)


@certs_app.command
async def revoke(target: str, /) -> None:
    """Revoke a certificate by serial, or every valid certificate of server/NAME or user/NAME.

    Open sessions of a revoked identity are closed by labd.
    Example: labctl certs revoke server/web1

    Parameters
    ----------
    target
        A serial (hex), server/NAME or user/NAME.
    """
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        async with LabClient.from_settings() as client:
            body = await client.post("/api/certs/revoke", {"target": target})
    revoked = body.get("revoked") or []
    if revoked:
        print(f"revoked {len(revoked)} certificate(s): {', '.join(map(str, revoked))}")
    else:
        print(f"nothing to revoke for {target}", file=sys.stderr)


def _print_status(status: dict[str, Any], fmt: str) -> None:
    from lab.runtime.output import emit, is_data

    if is_data(fmt):
        emit(status, fmt)
        return
    state = "rotation in progress" if status.get("rotating") else "not rotating"
    print(f"CA fingerprint: {status.get('fingerprint')} ({state})")
    cas = status.get("cas") or []
    if cas:
        emit(cas, fmt, columns=("state", "fingerprint", "subject", "not_after"))
    pending = status.get("pending") or []
    if pending:
        print(f"still on the old CA ({len(pending)}): {', '.join(map(str, pending))}")
    elif status.get("rotating"):
        print(
            "every identity has a certificate from the new CA: "
            "finish with labctl ca rotate --finish"
        )


async def _refresh_local_bundle() -> None:
    """Store labd's current CA bundle as ``ca.pem`` so labctl keeps trusting labd's new chain.

    Fetched over the already verified connection; an old labctl would otherwise reject labd's
    certificate once it is issued by the new CA.
    """
    from lab import pki
    from lab.client.api import LabClient
    from lab.client.contexts import identity_dir
    from lab.client.credentials import CA_FILE, write_atomic

    async with LabClient.from_settings() as client:
        bundle = (await client.request("GET", "/api/ca")).content
    pki.load_ca_bundle(bundle)
    write_atomic(identity_dir() / CA_FILE, bundle)


@ca_app.command
async def show(*, output: OutputOpt = "") -> None:
    """Show the CA fingerprint, every CA (active, next, old), rotation state and pending identities.

    Example: labctl ca show
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            status = await client.get("/api/ca/status")
    _print_status(status, fmt)


@ca_app.command
async def rotate(*, finish: bool = False, force: bool = False, output: OutputOpt = "") -> None:
    """Start a CA rotation (a new CA is trusted beside the old one), or finish it.

    Starting renews your own certificate from the new CA. --finish drops the old CA; it is
    refused while identities still hold certificates only from the old CA, unless --force.
    Example: labctl ca rotate, then later labctl ca rotate --finish

    Parameters
    ----------
    finish
        Drop the old CA and end the rotation.
    force
        With --finish, drop the old CA even if identities still depend on it.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient, renew_in_place
    from lab.client.contexts import identity_dir, remember
    from lab.client.settings import load_settings
    from lab.errors import Conflict, Invalid
    from lab.runtime.exits import handle

    fmt = check_format(output)
    with handle():
        if force and not finish:
            raise Invalid("--force only goes with --finish", details={"fields": ["force"]})
        async with LabClient.from_settings() as client:
            try:
                if finish:
                    status = await client.post("/api/ca/rotate/finish", {"force": force})
                else:
                    status = await client.post("/api/ca/rotate")
            except Conflict as exc:
                pending = exc.details.get("pending") or []
                if pending:
                    exc.details["hint"] = (
                        f"{len(pending)} identities still on the old CA ("
                        + ", ".join(map(str, pending[:5]))
                        + (", ..." if len(pending) > 5 else "")
                        + "); wait for them to renew or use --force"
                    )
                raise
        await _refresh_local_bundle()
        if not finish:
            settings = load_settings()
            await renew_in_place(identity_dir(), settings.server, request_timeout=settings.timeout)
        if status.get("fingerprint"):
            remember(ca_fingerprint=str(status["fingerprint"]))
    _print_status(status, fmt)
