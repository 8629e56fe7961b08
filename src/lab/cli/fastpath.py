"""The plain form of ``labctl exec``, run without the command tree.

``labctl exec server/NAME -- CMD`` is the verb scripts call in loops, and a profile of one
showed building the cyclopts command tree (importing cyclopts and the command modules) at a
third of the client's start-up. :func:`plain_exec` recognises only the plain form,
``exec [-i|--stdin] [-t|--tty] [--timeout D] [-e|--env K=V]... [--cwd DIR] server/NAME... --
CMD...`` (options before the targets, each once but ``--env``, a value in the next word or after
``=`` in a long name's); any other word (an option it does not list, ``--help``, no ``--``, no
target, no command, an empty value or one starting with ``-``) leaves the command line to
cyclopts, which stays the one definition of ``labctl exec`` and of its errors. One server runs
on :func:`lab.cli.exec_fast.run_fast`, several on :func:`lab.cli.exec_run.run_exec`, as
cyclopts' command would.
"""

from __future__ import annotations

_FLAGS = {"-i": "stdin", "--stdin": "stdin", "-t": "tty", "--tty": "tty"}
_VALUED = {"--timeout": "timeout", "-e": "env", "--env": "env", "--cwd": "cwd"}


class PlainExec:
    """A recognised ``labctl exec`` command line: its words (targets, then the command), its
    flags and options."""

    __slots__ = ("command", "cwd", "env", "stdin", "timeout", "tty", "words")

    def __init__(
        self,
        words: list[str],
        *,
        stdin: bool,
        tty: bool,
        command: int,
        timeout: str | None = None,
        env: list[str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.words = words
        self.command = words[len(words) - command :]
        self.stdin = stdin
        self.tty = tty
        self.timeout = timeout
        self.env = env or []
        self.cwd = cwd

    def run(self) -> None:
        """Run it as ``labctl exec`` does; raises SystemExit with the exit code.

        One server: :func:`lab.cli.exec_fast.run_fast` on blocking stdlib sockets (no trio,
        attrs or cattrs to import). Several: :func:`lab.cli.exec_run.run_exec` on trio."""
        from lab.runtime.exits import handle

        targets = self.words[: len(self.words) - len(self.command)]
        with handle():
            if len(targets) == 1:
                from lab.cli.exec_fast import run_fast

                code = run_fast(
                    targets[0].removeprefix("server/"),
                    self.command,
                    stdin=self.stdin,
                    tty=self.tty,
                    timeout=self.timeout,
                    env=self.env,
                    cwd=self.cwd,
                )
            else:
                code = self._run_trio()
        raise SystemExit(code)

    def _run_trio(self) -> int:
        from functools import partial

        import trio

        from lab.cli.exec_run import run_exec

        return trio.run(
            partial(
                run_exec,
                self.words,
                stdin=self.stdin,
                tty=self.tty,
                kill_after=self.timeout,
                env=self.env,
                cwd=self.cwd,
                selector=(),
                parallel=32,
            )
        )


def plain_exec(argv: list[str]) -> PlainExec | None:
    """``argv`` (labctl's arguments, ``--context`` taken out) as a :class:`PlainExec`, or None
    when it is anything but the plain form of ``labctl exec``."""
    if not argv or argv[0] != "exec" or "--" not in argv:
        return None
    cut = argv.index("--")
    command = argv[cut + 1 :]
    flags = {"stdin": False, "tty": False}
    options: dict[str, str] = {}
    env: list[str] = []
    targets: list[str] = []
    words = argv[1:cut]
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        name, eq, inline = word.partition("=")
        if targets:
            if not word.startswith("server/") or len(word) == len("server/"):
                return None
            targets.append(word)
        elif word.startswith("server/") and len(word) > len("server/"):
            targets.append(word)
        elif word in _FLAGS:
            flags[_FLAGS[word]] = True
        elif name in _VALUED and (not eq or name.startswith("--")):
            if eq:
                value = inline
            elif i < len(words):
                value, i = words[i], i + 1
            else:
                return None
            if not value or value.startswith("-"):
                return None
            key = _VALUED[name]
            if key == "env":
                env.append(value)
            elif key in options:
                return None  # given twice: cyclopts decides
            else:
                options[key] = value
        else:
            return None
    if not targets or not command:
        return None
    return PlainExec(
        [*targets, *command],
        stdin=flags["stdin"],
        tty=flags["tty"],
        command=len(command),
        timeout=options.get("timeout"),
        env=env,
        cwd=options.get("cwd"),
    )


__all__ = ["PlainExec", "plain_exec"]
