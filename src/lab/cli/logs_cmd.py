"""labctl logs: a server's journal or one of its agent's file sources, the audit log, or the
bastion's own log (dnsmasq lines included), optionally followed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import Parameter

from lab.cli.targets import SelectorOpt

if TYPE_CHECKING:
    from lab.client.wsclient import StreamState
    from lab.errors import LabError
    from lab.proto import Channel


async def logs_command(
    target: str | None = None,
    /,
    *,
    selector: SelectorOpt = (),
    follow: Annotated[
        bool, Parameter(name=["-f", "--follow"], negative=(), help="Keep printing new lines.")
    ] = False,
    unit: Annotated[str | None, Parameter(help="Journal unit, e.g. sshd.service")] = None,
    source: Annotated[str | None, Parameter(help="A file source configured on the agent")] = None,
    since: Annotated[str | None, Parameter(help="Journal entries newer than: 10m, 2h")] = None,
    lines: Annotated[int | None, Parameter(name=["-n", "--lines"], help="Last N lines")] = None,
    bastion: Annotated[
        str | None, Parameter(help="logs bastion: its URL (else LABCTL_BASTION_URL / config)")
    ] = None,
    token_file: Annotated[
        Path | None, Parameter(help="logs bastion: its admin token file (as labctl provision)")
    ] = None,
) -> None:
    """Print a server's logs: its journal (--unit) or a file source (--source); -f follows.

    Lines are printed as they arrive; Ctrl-C stops following. --since applies to the journal.
    ``bastion`` prints lab-bastion's own recent log (dnsmasq's lines included), reached like
    labctl provision reaches it.

    Example: labctl logs server/web1 --unit sshd.service --since 10m -f

    Example: labctl logs server/web1 --source app -n 100

    Example: labctl logs -l role=db,zone=a --unit postgresql.service (one server must match)

    Example: labctl logs audit -f (the audit log; see labctl get audit)

    Example: labctl logs bastion -f -n 50

    Parameters
    ----------
    target
        server/NAME, audit or bastion; or none with -l selecting exactly one server.
    """
    from lab.runtime.exits import handle

    if target is None or selector:
        with handle():
            target = await _one_target(target, selector)

    if target == "audit":  # labctl logs audit [-f]: the audit log, see lab.cli.audit_cmd
        from lab.cli.audit_cmd import logs_audit

        await logs_audit(follow=follow, since=since)
        return
    if target == "bastion":
        with handle():
            await logs_bastion(follow=follow, lines=lines, url=bastion, token_file=token_file)
        return
    with handle():
        await run_logs(target, follow=follow, unit=unit, source=source, since=since, lines=lines)


async def _one_target(target: str | None, selector: Sequence[str]) -> str:
    """server/NAME of the one server ``target`` and ``selector`` name together (kubectl's
    selectors; a name joins the matches); Invalid unless exactly one."""
    from lab.cli.targets import check_selectors, resolve_names
    from lab.errors import Invalid

    if target is None and not selector:
        raise Invalid(
            "name the server (server/NAME) or select it with -l",
            details={"hint": "labctl logs server/NAME -f"},
        )
    check_selectors(selector)
    if target is not None and not target.startswith("server/"):
        raise Invalid(
            f"{target!r} is not server/NAME", details={"hint": "labctl logs server/NAME -f"}
        )
    names = [target.removeprefix("server/")] if target is not None else []
    found = await resolve_names(names, selector) if selector else names
    if len(found) != 1:
        raise Invalid(
            f"logs reads one server; {len(found)} match: {', '.join(found)}",
            details={"hint": "narrow the selector (-l again ANDs), or name one server/NAME"},
        )
    return f"server/{found[0]}"


async def run_logs(
    target: str,
    *,
    follow: bool,
    unit: str | None,
    source: str | None,
    since: str | None,
    lines: int | None,
    server: str | None = None,
) -> None:
    """Stream the logs to stdout until the end (or Ctrl-C while following)."""
    import signal

    import trio

    from lab.client.durations import parse_duration
    from lab.client.settings import load_settings
    from lab.client.wsclient import StreamSession, connect, identity_context
    from lab.errors import Invalid
    from lab.proto.messages import LogsStart
    from lab.proto.requests import LogsRequest
    from lab.runtime.output import write_out

    if not target.startswith("server/") or target == "server/":
        raise Invalid(
            f"{target!r} is not server/NAME", details={"hint": "labctl logs server/NAME -f"}
        )
    if unit is not None and source is not None:
        raise Invalid("--unit reads the journal, --source a file: pick one")
    if lines is not None and lines < 0:
        raise Invalid("--lines must not be negative", details={"fields": ["lines"]})
    start = LogsStart(
        stream_id=0,
        unit=unit,
        source=source,
        since=float(parse_duration(since, field="since")) if since else None,
        lines=lines,
        follow=follow,
    )
    request = LogsRequest(targets=[target.removeprefix("server/")], start=start)

    async def sink(_: StreamState, channel: Channel, payload: bytes) -> None:
        await write_out(1, payload + b"\n")

    settings = load_settings()
    async with connect(server or settings.server, "/ws/logs", identity_context()) as ws:
        session = StreamSession(ws)
        (state,) = await session.open_request(request)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                await session.run(sink)
                nursery.cancel_scope.cancel()
    if state.error is not None:
        raise state.error


async def logs_bastion(
    *, follow: bool, lines: int | None, url: str | None, token_file: Path | None
) -> None:
    """Print the bastion's buffered log records (``GET /api/logs``), then follow new ones.

    Ends when the bastion ends the stream (it stops) or on Ctrl-C. Raises ConfigError (no admin
    token), Unavailable (bastion unreachable) and the bastion's own errors (401, 400).
    """
    import json
    import signal

    import httpx
    import trio

    from lab.cli.provision import bastion_access
    from lab.errors import Invalid, LabError, Unavailable
    from lab.runtime.logbuffer import format_entry
    from lab.runtime.output import terminal_text

    if lines is not None and lines < 0:
        raise Invalid("--lines must not be negative", details={"fields": ["lines"]})
    access = bastion_access(url, token_file)
    base, headers = access.url, access.headers
    params: dict[str, int] = {"follow": int(follow)}
    if lines is not None:
        params["lines"] = lines
    # No read timeout while following: a quiet bastion sends nothing for a long time.
    timeout = httpx.Timeout(15.0, read=None if follow else 15.0)
    failure: Exception | None = None

    async def stream() -> None:
        nonlocal failure
        try:
            async with (
                httpx.AsyncClient(base_url=base, timeout=timeout, verify=access.verify) as http,
                http.stream("GET", "/api/logs", params=params, headers=headers) as resp,
            ):
                try:
                    access.check_peer(resp)
                except LabError as exc:
                    failure = exc
                    return
                if resp.status_code >= 400:
                    await resp.aread()
                    failure = _api_error(resp)
                    return
                async for line in resp.aiter_lines():
                    if line:
                        print(terminal_text(format_entry(json.loads(line))), flush=True)
        except httpx.HTTPError as exc:
            failure = Unavailable(
                f"bastion at {base} unreachable: {exc}",
                details={"hint": "is lab-bastion running? labctl config set bastion URL"},
            )

    # Errors leave the nursery as values, not exceptions: one line on stderr, not a group.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await stream()
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _api_error(resp: Any) -> LabError:
    from lab.errors import LabError

    try:
        err = resp.json().get("error", {})
    except ValueError:
        err = {}
    exc = LabError(err.get("message") or resp.reason_phrase, details=err.get("details") or {})
    exc.code = err.get("code", "internal")
    exc.status = resp.status_code
    return exc


__all__ = ["logs_bastion", "logs_command", "run_logs"]
