"""The five sessions a fault must not touch: three ``labctl exec`` printing a counter and two
``labctl logs -f`` on a file another process appends to, all real labctl processes.

The issue's scenario has the counters print once a second for 20 s; the default suite prints
every ``PERIOD`` s until told to stop (after the fault), so a case costs seconds, not 20 s
(bench/faults.py runs the full-length version). What is asserted is the same: every counter
line in order, the final ``end N`` line, exit code 0, the logs' output equal to the file.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import trio

from tests.faults.site import (
    AGENT,
    TAG_VAR,
    Output,
    Site,
    assert_no_orphans,
    await_for,
    counter_script,
    iter_expected_counter,
    labctl,
    probe,
)

PERIOD = 0.5
EXECS = 3
FOLLOWERS = 2
TAG = "bystander"
FINISH_TIMEOUT = 30.0


@attrs.define
class Session:
    name: str
    proc: subprocess.Popen[bytes]
    out: Output
    err: Output


def _exec_problem(s: Session, code: int) -> str | None:
    if (code, s.err.text()) != (0, ""):
        return f"exit {code}: {s.err.text()[-200:]!r}"
    lines = s.out.lines()
    try:
        expected = list(iter_expected_counter(lines))
    except AssertionError as exc:
        return str(exc)
    return None if lines == expected else f"output differs: {lines[-5:]}"


def _printed(s: Session, text: str) -> bool:
    return s.out.text() == text


def _started(s: Session) -> bool:
    return bool(s.out.text()) or s.proc.poll() is not None


@attrs.define
class Bystanders:
    site: Site
    workdir: Path
    stop: Path
    appender: subprocess.Popen[bytes]
    execs: list[Session]
    followers: list[Session]
    progress: dict[str, int] = attrs.Factory(dict)

    # --- during the fault ---

    def _alive(self) -> None:
        for s in self.execs + self.followers:
            code = s.proc.poll()
            assert code is None, f"{s.name} ended early ({code}): {s.err.text()[-300:]!r}"

    def _counted(self, s: Session) -> int:
        """Complete counter lines so far; they must be exactly 1..n."""
        text = s.out.text()
        lines = text.split("\n")[:-1]  # the part after the last newline may be half-written
        assert lines == [str(i) for i in range(1, len(lines) + 1)], f"{s.name}: {lines[-5:]}"
        return len(lines)

    def _beyond(self, s: Session, before: int) -> int | None:
        n = self._counted(s)
        return n if n > before else None

    async def checkpoint(self, case: str) -> None:
        """After a fault: every session is alive, each counter moved on, nothing is missing,
        and the followers printed a prefix of the file."""
        self._alive()
        for s in self.execs:
            before = self.progress.get(s.name, 0)
            self.progress[s.name] = await await_for(
                f"{s.name} to go on after {case}", partial(self._beyond, s, before), timeout=15
            )
        feed = self.site.feed.read_text()
        for s in self.followers:
            assert feed.startswith(s.out.text()), f"{s.name} printed something else ({case})"
        await probe(self.site)  # and the agent still starts new streams
        self._alive()
        self.site.assert_one_session()
        self.site.assert_quiet_logs()

    # --- the end ---

    async def finish(self) -> None:
        """Stop the counters and the appender; every session ends with its exact output and
        exit code 0; no process of theirs is left on the agent."""
        self._alive()
        problems = await self.verdicts()
        assert not any(problems.values()), problems
        await assert_no_orphans(TAG)
        self.site.assert_one_session()

    async def verdicts(self) -> dict[str, str | None]:
        """Stop everything; per session, what was wrong with its end (None: nothing)."""
        self.stop.touch()
        problems: dict[str, str | None] = {}
        with trio.fail_after(FINISH_TIMEOUT):
            for s in self.execs:
                code = await trio.to_thread.run_sync(s.proc.wait)
                problems[s.name] = _exec_problem(s, code)
            await trio.to_thread.run_sync(self.appender.wait)
        feed = self.site.feed.read_text()
        for s in self.followers:
            with trio.move_on_after(FINISH_TIMEOUT):
                await await_for(f"{s.name} to print the whole file", partial(_printed, s, feed))
            s.proc.send_signal(signal.SIGINT)
            with trio.fail_after(FINISH_TIMEOUT):
                code = await trio.to_thread.run_sync(s.proc.wait)
            text = s.out.text()
            if (code, s.err.text()) != (0, ""):
                problems[s.name] = f"exit {code}: {s.err.text()[-200:]!r}"
            elif not feed.endswith("\n") or not feed.splitlines()[-1].startswith("end "):
                problems[s.name] = "the appender did not finish the file"
            elif text != feed:
                problems[s.name] = f"printed {len(text)} of the file's {len(feed)} bytes"
            else:
                problems[s.name] = None
        return problems

    def kill(self) -> None:
        """Cleanup whatever happened (the tests' finally)."""
        self.stop.touch()
        for s in self.execs + self.followers:
            if s.proc.poll() is None:
                s.proc.kill()
            s.proc.wait()
        if self.appender.poll() is None:
            self.appender.kill()
        self.appender.wait()


@asynccontextmanager
async def bystanders(site: Site, name: str, period: float = PERIOD) -> AsyncIterator[Bystanders]:
    """The five sessions, started and printing; killed on the way out whatever happened
    (a passing test calls :meth:`Bystanders.finish` inside the block)."""
    workdir = site.tmp / name
    workdir.mkdir()
    stop = workdir / "STOP"
    site.feed.write_text("")
    append = (
        f'i=0; while [ ! -e "{stop}" ]; do i=$((i+1)); echo "line $i" >> "{site.feed}"; '
        f'sleep {period}; done; echo "end $i" >> "{site.feed}"'
    )
    appender = subprocess.Popen(["sh", "-c", append])
    env = site.env()
    sessions: list[Session] = []

    def spawn(label: str, argv: list[str]) -> Session:
        out, err = Output(workdir / f"{label}.out"), Output(workdir / f"{label}.err")
        with out.path.open("wb") as o, err.path.open("wb") as e:
            proc = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env)
        session = Session(name=label, proc=proc, out=out, err=err)
        sessions.append(session)
        return session

    target = f"server/{AGENT}"
    execs = [
        spawn(
            f"exec{i}",
            labctl(
                "exec",
                "-e",
                f"{TAG_VAR}={TAG}",
                target,
                "--",
                "sh",
                "-c",
                counter_script(stop, period),
            ),
        )
        for i in range(EXECS)
    ]
    followers = [
        spawn(f"logs{i}", labctl("logs", target, "--source", "feed", "-f"))
        for i in range(FOLLOWERS)
    ]
    crowd = Bystanders(
        site=site, workdir=workdir, stop=stop, appender=appender, execs=execs, followers=followers
    )
    try:
        for s in sessions:
            await await_for(f"{s.name} to start", partial(_started, s))
        crowd._alive()
        yield crowd
    finally:
        crowd.kill()
