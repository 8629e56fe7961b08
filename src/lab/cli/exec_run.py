"""labctl exec's work, apart from its command line: one server (stdin, tty) or many (prefixed
output, summary).

Nothing here imports cyclopts: :func:`lab.cli.main.main` runs the plain form of ``labctl exec``
(the hot verb) without building the command tree (see :mod:`lab.cli.fastpath`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lab.runtime.output import write_out

if TYPE_CHECKING:
    from lab.client.wsclient import StreamSession, StreamState

# Leading words of this form name targets; the first other word starts the command.
PREFIX = "server/"
READ_SIZE = 64 * 1024
# A partial line longer than this is printed rather than buffered without bound (fan-out).
MAX_LINE = 64 * 1024
# Seconds to tell labd to cancel the remote commands once our stdout is gone.
CANCEL_TIMEOUT = 2.0


def _command_length(words: list[str]) -> int | None:
    """How many of ``words`` came after ``--`` on labctl's command line (None: unknown).

    cyclopts hands the words over without the ``--``; the command line still has it.
    """
    argv = sys.argv[1:]
    if "--" not in argv:
        return None
    after = argv[argv.index("--") + 1 :]
    if len(after) > len(words) or (after and words[len(words) - len(after) :] != after):
        return None
    return len(after)


def split_words(words: list[str], *, selector: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(target names, argv) from the positional words: the leading server/NAME words are
    targets (with -l too: they join its matches), the rest is the command."""
    from lab.errors import Invalid

    names: list[str] = []
    rest = list(words)
    command = _command_length(rest)
    if command is not None:
        head, rest = rest[: len(rest) - command], rest[len(rest) - command :]
        bad = [w for w in head if not w.startswith(PREFIX)]
        if bad:
            raise Invalid(
                f"{bad[0]!r} before -- is not server/NAME",
                details={"hint": "labctl exec server/NAME -- COMMAND..."},
            )
        names = [w.removeprefix(PREFIX) for w in head]
    else:
        while rest and rest[0].startswith(PREFIX):
            names.append(rest.pop(0).removeprefix(PREFIX))
    if not names and not selector:
        raise Invalid(
            "name a target as server/NAME or select servers with -l",
            details={"hint": "labctl exec server/NAME -- COMMAND..."},
        )
    if any(not n for n in names):
        raise Invalid("server/ needs a name", details={"fields": ["target"]})
    if not rest:
        raise Invalid("no command given", details={"hint": "put the command after --: -- uname -a"})
    return names, rest


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``--env K=V`` options as a mapping; Invalid naming ``env`` for one that is not K=V."""
    from lab.errors import Invalid

    environment: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Invalid(f"--env {item!r} is not K=V", details={"fields": ["env"]})
        environment[key] = value
    return environment


async def run_exec(
    words: list[str],
    *,
    stdin: bool,
    tty: bool,
    kill_after: str | None,
    env: list[str],
    cwd: str | None,
    selector: Sequence[str],
    parallel: int,
    server: str | None = None,
) -> int:
    """Run the command; returns the exit code labctl should exit with."""
    from lab.client.durations import parse_duration
    from lab.client.settings import load_settings
    from lab.client.wsclient import StreamSession, connect, identity_context
    from lab.errors import Invalid
    from lab.proto.messages import ExecStart
    from lab.proto.requests import ExecRequest

    if selector:
        from lab.cli.targets import check_selectors

        check_selectors(selector)
    names, argv = split_words(words, selector=selector)
    environment = parse_env(env)
    if parallel < 1:
        raise Invalid("--parallel must be at least 1", details={"fields": ["parallel"]})
    if selector:
        from lab.cli.targets import resolve_names

        names = await resolve_names(names, selector)
    fanout = bool(selector) or len(names) > 1
    if fanout and (stdin or tty):
        raise Invalid("-i and -t need exactly one server", details={"fields": ["stdin"]})
    rows, cols = window_size() if tty else (24, 80)
    start = ExecStart(
        stream_id=0,
        argv=argv,
        env=environment,
        cwd=cwd,
        tty=tty,
        stdin=stdin,
        rows=rows,
        cols=cols,
        timeout=float(parse_duration(kill_after, field="timeout")) if kill_after else None,
    )
    request = ExecRequest(targets=names, parallel=parallel, start=start)
    settings = load_settings()
    async with connect(server or settings.server, "/ws/exec", identity_context()) as ws:
        session = StreamSession(ws)
        streams = await session.open_request(request)
        if fanout:
            return await _fanout(session, streams)
        return await _single(session, streams[0], stdin=stdin, tty=tty)


async def _single(session: StreamSession, state: StreamState, *, stdin: bool, tty: bool) -> int:
    import trio

    from lab.proto import Channel

    async def sink(_: StreamState, channel: Channel, payload: bytes) -> None:
        await write_out(2 if channel == Channel.STDERR else 1, payload)

    restore = raw_terminal() if tty else None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_forward_signals, session, [state], tty)
            if stdin:
                nursery.start_soon(_pump_stdin, session, state)
            await _run_or_cancel(session, [state], sink)
            nursery.cancel_scope.cancel()
    finally:
        if restore is not None:
            restore()
    if state.error is not None:
        raise state.error
    return _exit_code(state)


async def _run_or_cancel(session: StreamSession, streams: list[StreamState], sink: Any) -> None:
    """Run the session; when our stdout is closed (``| head -1``), cancel the remote
    commands with ``stream-cancel`` before the BrokenPipeError ends labctl (quietly, 141)."""
    import contextlib

    import trio
    from trio_websocket import ConnectionClosed

    from lab.proto.messages import StreamCancel

    try:
        await session.run(sink)
    except BrokenPipeError:
        gone = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)
        with trio.move_on_after(CANCEL_TIMEOUT), contextlib.suppress(*gone):
            for state in streams:
                if not state.done:
                    await session.send(StreamCancel(stream_id=state.stream_id))
        raise


def _exit_code(state: StreamState) -> int:
    exit_msg = state.exit
    if exit_msg is None:
        return 1
    return exit_status(exit_msg.code, exit_msg.signal, exit_msg.bytes_dropped)


def exit_status(code: int | None, signal_name: str | None, bytes_dropped: int) -> int:
    """labctl's exit code for a remote command that ended so (``exec-exit``'s fields)."""
    if bytes_dropped:
        print(
            f"labctl: {bytes_dropped} bytes of output dropped past labd's output cap",
            file=sys.stderr,
        )
    if signal_name is not None:
        try:
            return 128 + int(signal.Signals[f"SIG{signal_name}"])
        except KeyError:
            return 128 + int(signal_name) if signal_name.isdigit() else 1
    return code if code is not None else 1


async def _pump_stdin(session: StreamSession, state: StreamState) -> None:
    """Copy our stdin to the remote process; EOF closes its stdin."""
    import trio

    from lab.proto.messages import StdinClose

    while True:
        # A thread: O_NONBLOCK on fd 0 would leak to the terminal and other processes.
        chunk = await trio.to_thread.run_sync(os.read, 0, READ_SIZE, abandon_on_cancel=True)
        if not chunk:
            break
        await session.send_stdin(state, chunk)
    await session.send(StdinClose(stream_id=state.stream_id))


async def _forward_signals(session: StreamSession, streams: list[StreamState], tty: bool) -> None:
    """Ctrl-C interrupts the remote group (a second one kills it); SIGWINCH resizes the pty."""
    import trio

    from lab.proto.messages import Resize, Signal, SignalName

    wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    if tty:
        wanted.append(signal.SIGWINCH)
    interrupts = 0
    with trio.open_signal_receiver(*wanted) as received:
        async for signum in received:
            if signum == signal.SIGWINCH:
                rows, cols = window_size()
                for state in streams:
                    await session.send(Resize(stream_id=state.stream_id, rows=rows, cols=cols))
                continue
            if signum == signal.SIGINT:
                interrupts += 1
                name = SignalName.INT if interrupts == 1 else SignalName.KILL
            else:
                name = SignalName.TERM if signum == signal.SIGTERM else SignalName.HUP
            for state in streams:
                if not state.done:
                    await session.send(Signal(stream_id=state.stream_id, name=name))


async def _fanout(session: StreamSession, streams: list[StreamState]) -> int:
    import trio

    from lab.proto import Channel
    from lab.runtime.progress import StatusLine

    width = max(len(s.server) for s in streams)
    partial: dict[tuple[int, int], bytes] = {}
    # On a terminal, stderr's last line counts servers done and failed as they finish.
    status = StatusLine()

    async def sink(state: StreamState, channel: Channel, payload: bytes) -> None:
        fd = 2 if channel == Channel.STDERR else 1
        key = (state.stream_id, fd)
        data = partial.pop(key, b"") + payload
        *lines, rest = data.split(b"\n")
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = b""
        if rest:
            partial[key] = rest
        if lines:
            prefix = f"{state.server.ljust(width)} | ".encode()
            shown = status.text
            status.clear()
            await write_out(fd, b"".join(prefix + line + b"\n" for line in lines))
            if shown:
                status.show(shown)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_forward_signals, session, streams, False)
        if status.enabled:
            nursery.start_soon(_show_progress, status, streams)
        await _run_or_cancel(session, streams, sink)
        nursery.cancel_scope.cancel()
    status.clear()
    by_id = {s.stream_id: s for s in streams}
    for (sid, fd), rest in sorted(partial.items()):
        prefix = f"{by_id[sid].server.ljust(width)} | ".encode()
        await write_out(fd, prefix + rest + b"\n")
    return _summary(streams, width)


def _failed(state: StreamState) -> bool:
    return state.error is not None or (state.exit is not None and _exit_code(state) != 0)


async def _show_progress(status: Any, streams: list[StreamState]) -> None:
    """Redraw ``N/M done, F failed: last-finished`` whenever a server finishes."""
    import trio

    finished: list[StreamState] = []
    while True:
        finished += [s for s in streams if s.done and s not in finished]
        failed = sum(_failed(s) for s in finished)
        text = f"{len(finished)}/{len(streams)} done, {failed} failed"
        if finished:
            last = finished[-1]
            text += f"; {last.server} {'failed' if _failed(last) else 'ok'}"
        if text != status.text:
            status.show(text)
        await trio.sleep(0.1)


def _summary(streams: list[StreamState], width: int) -> int:
    failed = 0
    lines = []
    for state in streams:
        if state.error is not None:
            result = f"error: {state.error.message}"
            failed += 1
        else:
            code = _exit_code(state)
            exit_msg = state.exit
            if exit_msg is not None and exit_msg.signal is not None:
                result = f"signal {exit_msg.signal}"
            else:
                result = f"exit {code}"
            if exit_msg is not None and exit_msg.timed_out:
                result += " (timed out)"
            failed += code != 0
        lines.append(f"{state.server.ljust(width)}  {result}")
    ok = len(streams) - failed
    noun = "server" if len(streams) == 1 else "servers"
    lines.append(f"{len(streams)} {noun}: {ok} succeeded, {failed} failed")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 1 if failed else 0


def window_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return 24, 80
    return max(1, min(size.lines, 65535)), max(1, min(size.columns, 65535))


def raw_terminal() -> Any:
    """Put a terminal stdin in raw mode (keys go to the remote pty); returns the undo."""
    if not os.isatty(0):
        return None
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)

    def restore() -> None:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)

    return restore
