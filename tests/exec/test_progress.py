"""Progress on a terminal: fan-out exec counts servers as they finish, waits spin; nothing of
it when stderr is a pipe."""

from __future__ import annotations

import io
import os
import subprocess

import trio

from lab.runtime.progress import ERASE, Spinner, StatusLine
from tests.exec.conftest import Lab


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_spinner_draws_on_a_terminal_and_erases_itself() -> None:
    term = Terminal()
    with Spinner("waiting for labd", stream=term, interval=0.01):
        trio.run(trio.sleep, 0.1)
    text = term.getvalue()
    assert "| waiting for labd (0s)" in text
    assert text.endswith(ERASE)
    piped = io.StringIO()
    with Spinner("waiting for labd", stream=piped, interval=0.01):
        trio.run(trio.sleep, 0.05)
    assert piped.getvalue() == ""


def test_status_line_is_erased_before_output() -> None:
    term = Terminal()
    line = StatusLine(term)
    line.show("1/2 done, 0 failed")
    line.clear()
    line.clear()  # twice is harmless
    assert term.getvalue() == ERASE + "1/2 done, 0 failed" + ERASE


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO once the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_fanout_shows_servers_finishing_on_a_terminal_only(lab: Lab) -> None:
    # The first server to start finishes at once, the other a second later.
    lock = lab.tmp / "first"
    script = f"mkdir {lock} 2>/dev/null || sleep 1; echo hi"
    argv = lab.labctl("exec", "server/alpha", "server/beta", "--", "sh", "-c", script)
    master, slave = os.openpty()
    try:
        with trio.fail_after(60):
            proc = await trio.to_thread.run_sync(
                lambda: subprocess.Popen(
                    argv,
                    env=lab.env(),
                    stdout=subprocess.PIPE,
                    stderr=slave,
                    stdin=subprocess.DEVNULL,
                )
            )
            os.close(slave)
            slave = -1
            err = await trio.to_thread.run_sync(_read_all, master)
            out, _ = await trio.to_thread.run_sync(proc.communicate)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    assert proc.returncode == 0
    assert sorted(out.decode().splitlines()) == ["alpha | hi", "beta  | hi"]
    text = err.decode()
    assert "0/2 done, 0 failed" in text, text
    assert "1/2 done, 0 failed; " in text, text
    assert ERASE in text
    # The summary itself comes after the line was erased.
    assert text.rstrip().endswith("2 servers: 2 succeeded, 0 failed")
    with trio.fail_after(60):
        piped = await trio.run_process(
            argv, env=lab.env(), capture_stdout=True, capture_stderr=True
        )
    assert b"\r" not in piped.stderr and b"done," not in piped.stderr


def test_a_paused_spinner_leaves_the_line_to_the_output() -> None:
    term = Terminal()
    with Spinner("waiting for 52:54:00:12:34:56 to be installed", stream=term, interval=0.01) as s:
        trio.run(trio.sleep, 0.05)
        with s.paused():
            before = term.getvalue()
            trio.run(trio.sleep, 0.05)
            assert term.getvalue() == before  # nothing drawn while paused
            assert before.endswith(ERASE)
