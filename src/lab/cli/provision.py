"""labctl provision: bare-metal machines through the bastion's operator API.

The bastion is found at ``--bastion`` / ``LABCTL_BASTION_URL`` / the ``bastion`` setting
(``labctl config set bastion URL``, default ``http://127.0.0.1:8080``). A standalone bastion
(``http://``) takes its admin token, read from ``--token-file`` / ``LABCTL_BASTION_TOKEN_FILE``
(default ``<bastion data dir>/admin-token``); a bastion joined to labd (``https://HOST:8443``)
takes labctl's labd identity, and labd's RBAC decides (``provision:*`` on ``machine/...``).
:func:`bastion_access` resolves it, for ``labctl logs bastion`` too.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from attrs import frozen
from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

if TYPE_CHECKING:
    import httpx

provision_app = App(
    name="provision",
    help="Discover, install and reprovision bare-metal machines through the PXE bastion.",
)

BastionOpt = Annotated[
    str | None,
    Parameter(help="Bastion URL (LABCTL_BASTION_URL, else `labctl config get bastion`)"),
]
TokenFileOpt = Annotated[
    Path | None,
    Parameter(
        help="Admin token file of a standalone (http://) bastion "
        "(LABCTL_BASTION_TOKEN_FILE, default <data dir>/admin-token)"
    ),
]

COLUMNS = ("mac", "state", "hostname", "role", "phase")
WIDE = ("disk", "message", "updated_at")


def bastion_url(url: str | None = None) -> str:
    """``url``, else ``LABCTL_BASTION_URL``, else the ``bastion`` setting."""
    import os

    from lab.client.settings import load_settings

    chosen = url or os.environ.get("LABCTL_BASTION_URL") or load_settings().bastion
    return chosen.rstrip("/")


@frozen(kw_only=True)
class BastionAccess:
    """How to reach the bastion's operator API: its URL, headers and TLS verification.

    ``http://`` (a standalone bastion): the admin token as a bearer header. ``https://`` (a
    bastion joined to labd, on its ``operator_port``): labctl's own labd identity (``labctl
    login``) as the client certificate; the bastion's certificate must chain to labd's CA and
    name a ``bastion/...`` (it carries no host name, so the subject is checked instead).
    """

    url: str
    headers: dict[str, str]
    verify: ssl.SSLContext | bool = True

    def check_peer(self, response: httpx.Response) -> None:
        """Raise Unauthenticated unless an https answer came from a labd bastion."""
        if self.verify is True:
            return
        from lab import pki
        from lab.errors import Unauthenticated

        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        # Positional: httpcore's sync backend hands over the C-level object, which takes no
        # keyword arguments.
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        subject = pki.cert_info(ssl.DER_cert_to_PEM_cert(der).encode()).subject if der else ""
        if not subject.startswith("bastion/"):
            raise Unauthenticated(
                f"{self.url} is not a labd bastion (its certificate names {subject or 'nothing'})",
                details={"reason": "not_a_bastion"},
            )


def bastion_access(url: str | None, token_file: Path | None) -> BastionAccess:
    """The bastion's URL and credentials; ConfigError when the token cannot be read, and
    Unauthenticated when an https bastion needs a labd identity and there is none."""
    import os

    from lab.errors import ConfigError

    base = bastion_url(url)
    if base.startswith("https://"):
        from lab.client.api import load_identity

        ctx = load_identity()
        # The bastion's certificate names no host: check_peer checks its subject instead.
        ctx.check_hostname = False
        return BastionAccess(url=base, headers={}, verify=ctx)
    if token_file is None and os.environ.get("LABCTL_BASTION_TOKEN_FILE"):
        token_file = Path(os.environ["LABCTL_BASTION_TOKEN_FILE"])
    if token_file is None:
        from lab.local.bastion import admin_token_file

        token_file = admin_token_file()
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the bastion admin token {token_file}: {exc.strerror}",
            details={"hint": "pass --token-file or set LABCTL_BASTION_TOKEN_FILE"},
        ) from exc
    return BastionAccess(url=base, headers={"Authorization": f"Bearer {token}"})


class _Api:
    """A small sync client of the bastion's operator API (httpx imported on first use)."""

    def __init__(self, url: str | None, token_file: Path | None) -> None:
        self.access = bastion_access(url, token_file)
        self.url = self.access.url

    def call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        from lab.errors import LabError, Unavailable

        timeout = kw.pop("timeout", 15.0)
        try:
            # A client of its own, so the peer is checked while the connection is open.
            with httpx.Client(verify=self.access.verify, timeout=timeout) as http:
                r = http.request(method, self.url + path, headers=self.access.headers, **kw)
                self.access.check_peer(r)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"bastion at {self.url} unreachable: {exc}",
                details={"hint": "is lab-bastion running? labctl init bastion standalone status"},
            ) from exc
        if r.status_code == 204:
            return None
        body = r.json()
        if r.status_code >= 400:
            err = body.get("error", {})
            exc_ = LabError(err.get("message", r.reason_phrase), details=err.get("details", {}))
            exc_.code = err.get("code", "internal")
            raise exc_
        return body


@provision_app.command(name="list")
def list_(
    *, output: OutputOpt = "", bastion: BastionOpt = None, token_file: TokenFileOpt = None
) -> None:
    """List the machines the bastion knows.

    Example: labctl provision list -o wide
    """
    from lab.cli.output import check_format
    from lab.runtime.exits import handle
    from lab.runtime.output import emit

    with handle():
        items = _Api(bastion, token_file).call("GET", "/api/machines")["items"]
    emit(items, check_format(output), columns=COLUMNS, wide=WIDE)


@provision_app.command
def show(
    mac: str,
    *,
    output: OutputOpt = "yaml",
    bastion: BastionOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Show one machine: state, phase, inventory and settings.

    Example: labctl provision show 52:54:00:12:34:56 -o json

    Parameters
    ----------
    mac
        The machine's MAC address (any common spelling: aa:bb:.., AA-BB-.., aabb..).
    """
    from urllib.parse import quote

    from lab.cli.output import check_format
    from lab.runtime.exits import handle
    from lab.runtime.output import emit

    with handle():
        m = _Api(bastion, token_file).call("GET", f"/api/machines/{quote(mac, safe='')}")
    emit(m, check_format(output), columns=COLUMNS, wide=WIDE)


@provision_app.command
def install(
    mac: str,
    hostname: str,
    *,
    role: Literal["worker", "infra"] = "worker",
    disk: str = "/dev/sda",
    ssh_key: Annotated[tuple[str, ...], Parameter(consume_multiple=False)] = (),
    ssh_key_file: Path | None = None,
    local_boot: Literal["exit", "sanboot"] = "exit",
    power_cycle: bool = False,
    output: OutputOpt = "",
    bastion: BastionOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Queue an install: the machine's next PXE boot installs Fedora with the role's layout.

    --power-cycle then has labd set the machine's next boot to PXE (once) and power-cycle it
    through its power driver (labctl power set machine/MAC ...), so it installs on its own.

    Example: labctl provision install 52:54:00:12:34:56 node1 --role worker
    --ssh-key-file ~/.ssh/id_ed25519.pub

    Parameters
    ----------
    mac
        The machine's MAC address (any common spelling: aa:bb:.., AA-BB-.., aabb..).
    hostname
        The machine's host name (RFC 1123), also its server name once its agent enrolls.
    role
        worker or infra: picks the disk layout (LVM volumes) and what is kept on reprovision.
    disk
        The disk to install on.
    ssh_key
        A public key for root's authorized_keys (repeat for several).
    ssh_key_file
        A file of public keys, one per line.
    local_boot
        How an installed machine boots from its disk on PXE: exit (to the firmware) or sanboot.
    power_cycle
        Then set next boot PXE and power-cycle the machine through labd (machine/MAC, else
        machine/HOSTNAME).
    """
    from lab.cli.output import check_format
    from lab.runtime.exits import handle
    from lab.runtime.output import emit

    keys = list(ssh_key)
    with handle():
        if ssh_key_file is not None:
            keys += [k for k in ssh_key_file.read_text().splitlines() if k.strip()]
        body = {
            "mac": mac,
            "hostname": hostname,
            "role": role,
            "disk": disk,
            "ssh_keys": keys,
            "local_boot": local_boot,
        }
        m = _Api(bastion, token_file).call("POST", "/api/install", json=body)
    emit(m, check_format(output), columns=COLUMNS, wide=WIDE)
    if power_cycle:
        _power_cycle(str(m.get("mac") or mac), hostname)


@provision_app.command
def reprovision(
    mac: str,
    *,
    dry_run: bool = False,
    power_cycle: bool = False,
    output: OutputOpt = "",
    bastion: BastionOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Reinstall the OS, keeping /home, /srv and the role's data volume unformatted.

    The installer aborts (and the machine is marked failed) if the disk layout does not match
    the machine's role. --dry-run prints what would be kept and formatted and changes nothing.
    Example: labctl provision reprovision 52:54:00:12:34:56 --dry-run

    Parameters
    ----------
    mac
        The machine's MAC address (any common spelling: aa:bb:.., AA-BB-.., aabb..).
    dry_run
        Print what would be kept and formatted; change nothing.
    power_cycle
        Then set next boot PXE and power-cycle the machine through labd (as for install).
    """
    from lab.cli.output import check_format
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        r = _Api(bastion, token_file).call(
            "POST", "/api/reprovision", json={"mac": mac, "dry_run": dry_run}
        )
    if is_data(fmt):
        emit(r, fmt)
        return
    plan, m = r["plan"], r["machine"]
    head = "would reprovision" if dry_run else "queued reprovision of"
    print(f"{head} {m['hostname']} ({m['mac']}, role {plan['role']}) on {m['disk']}")
    print("keep (not formatted): " + " ".join(plan["keep"]))
    print("format:               " + " ".join(plan["format"]))
    if power_cycle and not dry_run:
        _power_cycle(str(m["mac"]), str(m.get("hostname") or ""))


def _power_cycle(mac: str, hostname: str) -> None:
    """Ask labd to set next boot PXE and power-cycle ``machine/MAC`` (else machine/HOSTNAME)."""
    import trio

    from lab.client.api import LabClient
    from lab.errors import NotFound
    from lab.runtime.exits import handle

    async def cycle() -> dict[str, Any]:
        async with LabClient.from_settings() as client:
            names = [n for n in (mac, hostname) if n]
            for i, name in enumerate(names):
                try:
                    answer: dict[str, Any] = await client.post(
                        f"/api/power/machine/{name}/cycle", json={"next_boot": "pxe"}
                    )
                    return answer
                except NotFound:
                    if i == len(names) - 1:
                        raise
            raise NotFound("no machine name to power-cycle")

    with handle():
        answer = trio.run(cycle)
    print(
        f"{answer['target']}: next boot pxe, power cycled ({answer['driver']}: {answer['answer']})"
    )


@provision_app.command
def forget(mac: str, *, bastion: BastionOpt = None, token_file: TokenFileOpt = None) -> None:
    """Delete a machine from the bastion; its next PXE boot is a discovery again.

    Example: labctl provision forget 52:54:00:12:34:56

    Parameters
    ----------
    mac
        The machine's MAC address (any common spelling: aa:bb:.., AA-BB-.., aabb..).
    """
    from urllib.parse import quote

    from lab.runtime.exits import handle

    with handle():
        _Api(bastion, token_file).call("DELETE", f"/api/machines/{quote(mac, safe='')}")
    print(f"forgot {mac}")


@provision_app.command
def watch(
    mac: str | None = None,
    *,
    bastion: BastionOpt = None,
    token_file: TokenFileOpt = None,
    until_done: bool = False,
) -> None:
    """Print machine state changes as they happen (Ctrl-C to stop).

    With --until-done, exit when MAC is installed/enrolled (0) or failed (1).
    Example: labctl provision watch 52:54:00:12:34:56 --until-done

    Parameters
    ----------
    mac
        Only this machine (default: every machine).
    until_done
        Exit when MAC is installed or enrolled (0) or failed (1).
    """
    from lab.model.mac import normalize_mac
    from lab.runtime.exits import handle
    from lab.runtime.progress import Spinner

    with handle():
        want = normalize_mac(mac) if mac else None
        what = (
            f"waiting for {want} to be installed"
            if until_done and want
            else "waiting for changes (Ctrl-C stops)"
        )
        with Spinner(what) as spinner:
            _watch(_Api(bastion, token_file), want, until_done, spinner)


def _watch(api: _Api, want: str | None, until_done: bool, spinner: Any) -> None:
    """Print machine changes as the bastion reports them (long polls); see :func:`watch`."""
    seen: dict[str, tuple[Any, ...]] = {}
    version = None
    while True:
        params: dict[str, int] = {} if version is None else {"wait_after": version}
        r = api.call("GET", "/api/machines", params=params, timeout=45.0)
        version = r["version"]
        for m in r["items"]:
            if want and m["mac"] != want:
                continue
            key = (m["state"], m["phase"], m["message"], m["settings"].get("percent"))
            if seen.get(m["mac"]) != key:
                seen[m["mac"]] = key
                pct = m["settings"].get("percent")
                cols = [m["updated_at"], m["mac"], m["hostname"] or "-", m["state"]]
                cols += [m["phase"] or "-", "" if pct is None else f"{pct}%", m["message"]]
                with spinner.paused():
                    print("  ".join(str(c) for c in cols), flush=True)
            if until_done and want and m["state"] in ("installed", "enrolled", "failed"):
                raise SystemExit(1 if m["state"] == "failed" else 0)
