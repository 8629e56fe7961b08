"""labctl logs: a server's journal or one of its agent's file sources, optionally followed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import Parameter

if TYPE_CHECKING:
    from lab.cli.wsclient import StreamState
    from lab.proto import Channel


async def logs_command(
    target: str,
    /,
    *,
    follow: Annotated[bool, Parameter(name=["-f", "--follow"], negative=())] = False,
    unit: Annotated[str | None, Parameter(help="Journal unit, e.g. sshd.service")] = None,
    source: Annotated[str | None, Parameter(help="A file source configured on the agent")] = None,
    since: Annotated[str | None, Parameter(help="Journal entries newer than: 10m, 2h")] = None,
    lines: Annotated[int | None, Parameter(name=["-n", "--lines"], help="Last N lines")] = None,
) -> None:
    """Print a server's logs: its journal (--unit) or a file source (--source); -f follows.

    Lines are printed as they arrive; Ctrl-C stops following. --since applies to the journal.

    Example: labctl logs server/web1 --unit sshd.service --since 10m -f
    Example: labctl logs server/web1 --source app -n 100
    Example: labctl logs audit -f (the audit log; see labctl get audit)
    """
    from lab.cli.errors import handle

    if target == "audit":  # labctl logs audit [-f]: the audit log, see lab.cli.audit_cmd
        from lab.cli.audit_cmd import logs_audit

        await logs_audit(follow=follow, since=since)
        return
    with handle():
        await run_logs(target, follow=follow, unit=unit, source=source, since=since, lines=lines)


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
    import os
    import signal

    import trio

    from lab.cli.durations import parse_duration
    from lab.cli.settings import load_settings
    from lab.cli.wsclient import StreamSession, connect, identity_context
    from lab.errors import Invalid

    if not target.startswith("server/") or target == "server/":
        raise Invalid(
            f"{target!r} is not server/NAME", details={"hint": "labctl logs server/NAME -f"}
        )
    if unit is not None and source is not None:
        raise Invalid("--unit reads the journal, --source a file: pick one")
    if lines is not None and lines < 0:
        raise Invalid("--lines must not be negative", details={"fields": ["lines"]})
    start: dict[str, Any] = {
        "unit": unit,
        "source": source,
        "since": float(parse_duration(since, field="since")) if since else None,
        "lines": lines,
        "follow": follow,
    }
    params = {"targets": [target.removeprefix("server/")], "start": start}

    async def sink(_: StreamState, channel: Channel, payload: bytes) -> None:
        data = payload + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(1, view) :]

    settings = load_settings()
    async with connect(server or settings.server, "/ws/logs", identity_context()) as ws:
        session = StreamSession(ws)
        (state,) = await session.open("logs", params)
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


__all__ = ["logs_command", "run_logs"]
