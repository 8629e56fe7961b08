"""labctl power: status, on, off, cycle, reset of servers and machines; set their driver."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt
from lab.cli.targets import SelectorOpt

power_app = App(
    name="power",
    help="Power control through a BMC (Redfish, IPMI), Wake-on-LAN or the agent (docs/power.md).",
)

NextBoot = Annotated[
    Literal["pxe"] | None,
    Parameter(help="Boot from the network once, before the action (redfish and ipmi)."),
]
Parallel = Annotated[int, Parameter(help="Targets handled at once with -l.")]
COLUMNS = ("target", "driver", "power", "answer")


def split_target(word: str) -> tuple[str, str]:
    """``server/NAME`` or ``machine/NAME`` (a bare NAME is a server); Invalid otherwise."""
    from lab.errors import Invalid

    kind, sep, name = word.partition("/")
    if not sep:
        kind, name = "server", word
    kind = {"servers": "server", "machines": "machine"}.get(kind, kind)
    if kind not in ("server", "machine") or not name or "/" in name:
        raise Invalid(
            f"target {word!r} must be server/NAME or machine/NAME",
            details={"fields": ["target"]},
        )
    return kind, name


async def _run(
    action: str,
    targets: Sequence[str],
    selector: Sequence[str],
    next_boot: str | None,
    parallel: int,
    output: str,
) -> None:
    import sys
    from urllib.parse import quote

    import trio

    from lab.cli.output import check_format
    from lab.cli.targets import check_selectors, fetch_servers
    from lab.client.api import LabClient
    from lab.errors import Invalid, LabError, NotFound
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    results: list[dict[str, Any]] = []
    with handle():
        pairs = [split_target(t) for t in targets]
        check_selectors(selector)
        if not pairs and not selector:
            raise Invalid(
                "name a target (server/NAME, machine/NAME) or select servers with -l",
                details={"hint": f"labctl power {action} server/node1"},
            )
        if parallel < 1:
            raise Invalid("--parallel must be at least 1", details={"fields": ["parallel"]})
        async with LabClient.from_settings() as client:
            if selector:
                found = await fetch_servers(client, [], selector, everything=False)
                if not found:
                    raise NotFound(f"no server matches {' '.join(selector)!r}")
                pairs += [("server", str(item["name"])) for item in found]

            async def one(kind: str, name: str) -> dict[str, Any]:
                path = f"/api/power/{kind}/{quote(name, safe='')}"
                if action == "status":
                    return dict(await client.get(path))
                body = {"next_boot": next_boot} if next_boot else {}
                return dict(await client.post(f"{path}/{action}", json=body))

            if len(pairs) == 1 and not selector:
                results.append(await one(*pairs[0]))
            else:
                limiter = trio.CapacityLimiter(parallel)

                async def guarded(kind: str, name: str) -> None:
                    async with limiter:
                        try:
                            results.append(await one(kind, name))
                        except LabError as exc:
                            results.append(
                                {"target": f"{kind}/{name}", "error": exc.message, "code": exc.code}
                            )

                async with trio.open_nursery() as nursery:
                    for kind, name in pairs:
                        nursery.start_soon(guarded, kind, name)
    results.sort(key=lambda r: str(r.get("target")))
    if is_data(fmt):
        emit(results[0] if len(results) == 1 and not selector else results, fmt)
    else:
        for r in results:
            if "error" in r:
                print(f"{r['target']}: error: {r['error']}")
            elif action == "status":
                print(f"{r['target']}: {r['power']} ({r['driver']})")
            else:
                said = f"{r['driver']}: {r['answer']}"
                print(f"{r['target']}: {action} done, power {r['power']} ({said})")
    failed = [r for r in results if "error" in r]
    if len(results) > 1 or selector:
        print(f"{len(results) - len(failed)} ok, {len(failed)} failed", file=sys.stderr)
    if failed:
        raise SystemExit(1)


@power_app.command
async def status(
    *targets: str, selector: SelectorOpt = (), parallel: Parallel = 8, output: OutputOpt = ""
) -> None:
    """Print the power state (on, off, unknown) and the driver of each target.

    Example: labctl power status server/node1 -o json

    Parameters
    ----------
    targets
        server/NAME or machine/NAME (a bare NAME is a server).
    """
    await _run("status", targets, selector, None, parallel, output)


@power_app.command
async def on(
    *targets: str,
    selector: SelectorOpt = (),
    next_boot: NextBoot = None,
    parallel: Parallel = 8,
    output: OutputOpt = "",
) -> None:
    """Power on (Wake-on-LAN, or through the BMC).

    Example: labctl power on machine/node7 --next-boot pxe

    Parameters
    ----------
    targets
        server/NAME or machine/NAME (a bare NAME is a server).
    """
    await _run("on", targets, selector, next_boot, parallel, output)


@power_app.command
async def off(
    *targets: str, selector: SelectorOpt = (), parallel: Parallel = 8, output: OutputOpt = ""
) -> None:
    """Power off at once (BMC ForceOff).

    Example: labctl power off server/node1

    Parameters
    ----------
    targets
        server/NAME or machine/NAME (a bare NAME is a server).
    """
    await _run("off", targets, selector, None, parallel, output)


@power_app.command
async def cycle(
    *targets: str,
    selector: SelectorOpt = (),
    next_boot: NextBoot = None,
    parallel: Parallel = 8,
    output: OutputOpt = "",
) -> None:
    """Power-cycle (an off machine is powered on); with -l, a summary ends the output.

    Example: labctl power cycle -l role=worker --parallel 4 --next-boot pxe

    Parameters
    ----------
    targets
        server/NAME or machine/NAME (a bare NAME is a server).
    """
    await _run("cycle", targets, selector, next_boot, parallel, output)


@power_app.command
async def reset(
    *targets: str,
    selector: SelectorOpt = (),
    next_boot: NextBoot = None,
    parallel: Parallel = 8,
    output: OutputOpt = "",
) -> None:
    """Hard reset (BMC ForceRestart).

    Example: labctl power reset machine/node7 --next-boot pxe

    Parameters
    ----------
    targets
        server/NAME or machine/NAME (a bare NAME is a server).
    """
    await _run("reset", targets, selector, next_boot, parallel, output)


@power_app.command(name="set")
async def set_(
    target: str,
    *,
    driver: Literal["wol", "redfish", "ipmi", "agent"],
    url: str | None = None,
    system: str | None = None,
    host: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password_file: Path | None = None,
    mac: str | None = None,
    broadcast: str | None = None,
    interface: str | None = None,
    ca_file: str | None = None,
    insecure: bool = False,
    output: OutputOpt = "",
) -> None:
    """Set the power driver of a server or machine (labd seals the password at rest).

    Example: labctl power set server/node1 --driver ipmi --host 10.0.0.21 --username admin
    --password-file bmc.pass

    Parameters
    ----------
    target
        server/NAME or machine/NAME.
    driver
        wol, redfish, ipmi, or agent (servers only: the agent runs systemctl reboot/poweroff).
    url
        redfish: the BMC's base URL (https://bmc1).
    system
        redfish: the system id; may be left out when the BMC has one system.
    host
        ipmi: the BMC's host name or address.
    port
        ipmi: UDP port (623); wol: UDP port (9).
    username
        redfish, ipmi: the BMC user.
    password_file
        redfish, ipmi: a file holding the BMC password (first line; never on the command line).
    mac
        wol: the machine's MAC address.
    broadcast
        wol: the broadcast address to send to (255.255.255.255).
    interface
        wol: the interface labd sends from.
    ca_file
        redfish: a PEM bundle of the CA(s) that signed the BMC's certificate, as seen by labd.
    insecure
        redfish: do not verify the BMC's TLS certificate.
    """
    from urllib.parse import quote

    import trio

    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.errors import Invalid
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        kind, name = split_target(target)
        settings: dict[str, Any] = {
            k: v
            for k, v in {
                "url": url, "system": system, "host": host, "port": port,
                "username": username, "mac": mac, "broadcast": broadcast,
                "interface": interface, "ca_file": ca_file,
            }.items()
            if v is not None
        }  # fmt: skip
        if insecure:
            settings["insecure"] = True
        password = ""
        if password_file is not None:
            try:
                text = await trio.Path(password_file).read_text(encoding="utf-8")
                password = text.splitlines()[0]
            except (OSError, IndexError) as exc:
                raise Invalid(
                    f"cannot read a password from {password_file}",
                    details={"fields": ["password_file"]},
                ) from exc
        async with LabClient.from_settings() as client:
            answer = await client.put(
                f"/api/power/{kind}/{quote(name, safe='')}",
                json={"driver": driver, "settings": settings, "password": password},
            )
    if is_data(fmt):
        emit(answer, fmt)
    else:
        print(f"{answer['target']}: power driver {answer['driver']} set")
