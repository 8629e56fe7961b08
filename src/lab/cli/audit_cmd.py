"""labctl audit (verify the hash chain, export JSON lines), labctl get audit and
labctl logs audit (read and follow the audit log)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter

if TYPE_CHECKING:
    from lab.cli.client import LabClient

audit_app = App(name="audit", help="The tamper-evident audit log: verify its chain, export it.")

OutputOpt = Annotated[str, Parameter(name=["-o", "--output"], help="table, wide, json or yaml")]
SinceOpt = Annotated[str | None, Parameter(help="Only entries newer than this: 30s, 10m, 1h, 7d.")]
PAGE = 1000
COLUMNS = ("seq", "time", "user", "action", "resource", "result")
WIDE = ("duration_ms", "source", "session", "details")
FOLLOW_INTERVAL = 1.0


def since_iso(since: str | None) -> str | None:
    """The ISO time ``since`` ago (a duration like 10m), or None."""
    from datetime import UTC, datetime, timedelta

    from lab.cli.durations import parse_duration

    if since is None:
        return None
    seconds = parse_duration(since, field="since")
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


async def pages(
    client: LabClient,
    *,
    user: str | None = None,
    action: str | None = None,
    since: str | None = None,
    after_seq: int = 0,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching entry after ``after_seq``, a page at a time, in ``seq`` order."""
    params = {"limit": str(PAGE)}
    params.update({k: v for k, v in (("user", user), ("action", action), ("since", since)) if v})
    while True:
        answer = await client.get("/api/audit", params={**params, "after_seq": str(after_seq)})
        items: list[dict[str, Any]] = answer.get("items", [])
        if items:
            yield items
        after_seq = int(answer.get("last_seq", after_seq))
        if len(items) < PAGE:
            return


def line(entry: dict[str, Any]) -> str:
    who = entry.get("user") or "-"
    return (
        f"{entry.get('time')} #{entry.get('seq')} {who} {entry.get('action')} "
        f"{entry.get('resource') or '-'} {entry.get('result')} "
        f"{entry.get('duration_ms')}ms from {entry.get('source') or '-'}"
    )


async def get_audit(
    *,
    user: Annotated[
        str | None, Parameter(help="Only entries of this identity, e.g. user/ann.")
    ] = None,
    action: Annotated[str | None, Parameter(help="Only this action, e.g. users:create.")] = None,
    since: SinceOpt = None,
    output: OutputOpt = "table",
) -> None:
    """List audit entries: who did what, on what, with which result.

    Example: labctl get audit --user user/ann --since 10m -o json
    """
    from lab.cli.client import LabClient
    from lab.cli.errors import handle
    from lab.cli.output import check_format, emit

    fmt = check_format(output)
    items: list[dict[str, Any]] = []
    with handle():
        start = since_iso(since)
        async with LabClient.from_settings() as client:
            async for page in pages(client, user=user, action=action, since=start):
                items.extend(page)
    if fmt in ("json", "yaml"):
        emit(items, fmt)
    elif not items:
        print("no audit entries", file=sys.stderr)
    else:
        emit(items, fmt, columns=COLUMNS, wide=WIDE)


async def logs_audit(
    *,
    follow: Annotated[
        bool, Parameter(name=["-f", "--follow"], help="Keep printing new entries.")
    ] = False,
    since: SinceOpt = None,
) -> None:
    """Print the audit log one line per entry; with -f keep following it.

    Example: labctl logs audit -f --since 1h
    """
    import trio

    from lab.cli.client import LabClient
    from lab.cli.errors import handle

    with handle():
        start = since_iso(since)
        last = 0
        async with LabClient.from_settings() as client:
            while True:
                async for page in pages(client, since=start, after_seq=last):
                    for entry in page:
                        print(line(entry), flush=True)
                    last = int(page[-1]["seq"])
                if not follow:
                    return
                # New entries are found by polling after the last seq seen.
                await trio.sleep(FOLLOW_INTERVAL)


@audit_app.command
async def verify(*, output: OutputOpt = "table") -> None:
    """Check the audit log's hash chain; name the first entry that was edited, deleted or
    reordered. Exits 0 when the chain holds, 1 when it is broken.

    Example: labctl audit verify
    """
    from lab.cli.client import LabClient
    from lab.cli.errors import EXIT_ERROR, handle
    from lab.cli.output import check_format, emit

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            answer = await client.get("/api/audit/verify")
    if fmt in ("json", "yaml"):
        emit(answer, fmt)
    elif answer.get("ok"):
        print(f"audit chain ok: {answer.get('checked')} entries, last #{answer.get('last_seq')}")
    else:
        print(
            f"audit chain broken at entry #{answer.get('broken_at')}: {answer.get('reason')}"
            f" ({answer.get('checked')} entries before it are intact)",
            file=sys.stderr,
        )
        entry = answer.get("entry")
        if isinstance(entry, dict):
            print(line(entry), file=sys.stderr)
    if not answer.get("ok"):
        raise SystemExit(EXIT_ERROR)


@audit_app.command
async def export(*, since: SinceOpt = None) -> None:
    """Write audit entries as JSON lines (one entry per line) to stdout, oldest first.

    Example: labctl audit export --since 7d > audit.jsonl
    """
    import json

    from lab.cli.client import LabClient
    from lab.cli.errors import handle

    with handle():
        start = since_iso(since)
        async with LabClient.from_settings() as client:
            async for page in pages(client, since=start):
                for entry in page:
                    sys.stdout.write(
                        json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
                    )
                sys.stdout.flush()
