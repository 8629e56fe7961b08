"""labctl audit (verify the hash chain, export JSON lines), labctl get audit and
labctl logs audit (read and follow the audit log)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

if TYPE_CHECKING:
    from lab.client.api import LabClient

audit_app = App(
    name="audit",
    help="The tamper-evident audit log: verify its chain, keep checkpoints, export it.",
)

SinceOpt = Annotated[str | None, Parameter(help="Only entries newer than this: 30s, 10m, 1h, 7d.")]
PAGE = 1000
COLUMNS = ("seq", "time", "user", "action", "resource", "result")
WIDE = ("duration_ms", "source", "session", "details")
FOLLOW_INTERVAL = 1.0


def since_iso(since: str | None) -> str | None:
    """The ISO time ``since`` ago (a duration like 10m), or None."""
    from datetime import UTC, datetime, timedelta

    from lab.client.durations import parse_duration

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


def _ms(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def line(entry: dict[str, Any]) -> str:
    who = entry.get("user") or "-"
    return (
        f"{entry.get('time')} #{entry.get('seq')} {who} {entry.get('action')} "
        f"{entry.get('resource') or '-'} {entry.get('result')} "
        f"{_ms(entry.get('duration_ms'))}ms from {entry.get('source') or '-'}"
    )


async def get_audit(
    *seqs: str,
    user: Annotated[
        str | None, Parameter(help="Only entries of this identity, e.g. user/ann.")
    ] = None,
    action: Annotated[str | None, Parameter(help="Only this action, e.g. users:create.")] = None,
    since: SinceOpt = None,
    output: OutputOpt = "",
) -> None:
    """List audit entries: who did what, on what, with which result; or the ones numbered.

    Example: labctl get audit --user user/ann --since 10m -o json

    Parameters
    ----------
    seqs
        Entry numbers to show (SEQ or audit/SEQ), e.g. labctl get audit/42.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    items: list[dict[str, Any]] = []
    with handle():
        numbers = [_seq(s) for s in seqs]
        start = since_iso(since)
        async with LabClient.from_settings() as client:
            for number in numbers:
                items.append(await _entry(client, number))
            if not numbers:
                async for page in pages(client, user=user, action=action, since=start):
                    items.extend(page)
    if is_data(fmt):
        emit(
            [{**i, "name": i.get("seq")} for i in items] if fmt == "name" else items,
            fmt,
            kind="audit",
        )
    elif not items:
        print("no audit entries", file=sys.stderr)
    else:
        emit(items, fmt, columns=COLUMNS, wide=WIDE)


def _seq(text: str) -> int:
    from lab.errors import Invalid

    number = text.removeprefix("audit/")
    if not number.isdigit() or int(number) < 1:
        raise Invalid(
            f"audit entry {text!r} is not a number", details={"hint": "labctl get audit/42"}
        )
    return int(number)


async def _entry(client: LabClient, seq: int) -> dict[str, Any]:
    """Audit entry number ``seq``; NotFound when there is none."""
    from lab.errors import NotFound

    answer = await client.get("/api/audit", params={"after_seq": str(seq - 1), "limit": "1"})
    items = answer.get("items", [])
    if not items or items[0].get("seq") != seq:
        raise NotFound(f"audit/{seq} not found", details={"hint": "labctl get audit"})
    return dict(items[0])


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

    from lab.client.api import LabClient
    from lab.runtime.exits import handle

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


def read_witnesses(paths: list[str]) -> list[dict[str, Any]]:
    """The checkpoints kept in ``paths``: each file holds one checkpoint object, the answer of
    ``labctl audit checkpoint`` or JSON lines of them (an agent's or labd's checkpoint file)."""
    import json
    from pathlib import Path

    from lab.errors import Invalid

    found: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise Invalid(f"cannot read checkpoint file {path}: {exc.strerror}") from exc
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            try:
                docs = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise Invalid(f"checkpoint file {path} is not JSON: {exc}") from exc
        for doc in docs:
            inner = doc.get("checkpoint") if isinstance(doc, dict) else None
            item = inner if isinstance(inner, dict) else doc
            if not isinstance(item, dict):
                raise Invalid(f"checkpoint file {path} holds no checkpoint object")
            found.append(item)
    return found


@audit_app.command
async def verify(
    *,
    checkpoint: Annotated[
        list[str] | None,
        Parameter(
            name=["--checkpoint"],
            help="A checkpoint kept elsewhere (labctl audit checkpoint > FILE); repeatable.",
        ),
    ] = None,
    output: OutputOpt = "",
) -> None:
    """Check the audit log's keyed chain against its start record, labd's signed checkpoints
    and any checkpoint you kept; say what broke it: edited, deleted, rechained, truncated,
    wiped, rewritten, start_missing, wrong_key or bad_checkpoint. Exits 0 when the chain holds,
    1 when it is broken.

    Example: labctl audit verify --checkpoint ~/audit-checkpoint.json
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import EXIT_ERROR, handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        witnesses = read_witnesses(checkpoint or [])
        async with LabClient.from_settings() as client:
            if witnesses:
                answer = await client.post("/api/audit/verify", json={"checkpoints": witnesses})
            else:
                answer = await client.get("/api/audit/verify")
    if is_data(fmt):
        emit(answer, fmt)
    elif answer.get("ok"):
        legacy = int(answer.get("legacy") or 0)
        print(
            f"audit chain ok: {answer.get('checked')} entries, last #{answer.get('last_seq')}, "
            f"{answer.get('checkpoints')} checkpoints matched"
            + (f" ({legacy} legacy entries before the keyed chain)" if legacy else "")
        )
    else:
        print(
            f"audit chain broken at entry #{answer.get('broken_at')} ({answer.get('kind')}): "
            f"{answer.get('reason')} ({answer.get('checked')} entries before it are intact)",
            file=sys.stderr,
        )
        entry = answer.get("entry")
        if isinstance(entry, dict):
            print(line(entry), file=sys.stderr)
    if not answer.get("ok"):
        raise SystemExit(EXIT_ERROR)


@audit_app.command(name="checkpoint")
async def checkpoint_cmd() -> None:
    """Print labd's newest signed audit checkpoint (JSON) with its public key. Keep it away
    from labd's host; later, labctl audit verify --checkpoint FILE detects entries deleted
    since.

    Example: labctl audit checkpoint > ~/audit-checkpoint.json
    """
    import json

    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        async with LabClient.from_settings() as client:
            answer = await client.get("/api/audit/checkpoint")
    print(json.dumps(answer, sort_keys=True, indent=2))


@audit_app.command
async def export(*, since: SinceOpt = None) -> None:
    """Write audit entries as JSON lines (one entry per line) to stdout, oldest first.

    Example: labctl audit export --since 7d > audit.jsonl
    """
    import json

    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        start = since_iso(since)
        async with LabClient.from_settings() as client:
            async for page in pages(client, since=start):
                for entry in page:
                    sys.stdout.write(
                        json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
                    )
                sys.stdout.flush()
