"""The plain form of ``labctl exec``, run without the command tree.

``labctl exec server/NAME -- CMD`` is the verb scripts call in loops, and a profile of one
showed building the cyclopts command tree (importing cyclopts and the command modules) at a
third of the client's start-up. :func:`plain_exec` recognises only the plain form,
``exec [-i|--stdin] [-t|--tty] server/NAME... -- CMD...``; any other word (an option it does not
list, ``--help``, no ``--``, no target, no command) leaves the command line to cyclopts, which
stays the one definition of ``labctl exec`` and of its errors. Both run
:func:`lab.cli.exec_run.run_exec` the same way.
"""

from __future__ import annotations

_FLAGS = {"-i": "stdin", "--stdin": "stdin", "-t": "tty", "--tty": "tty"}


class PlainExec:
    """A recognised ``labctl exec`` command line: its words (targets, then the command) and
    its two flags."""

    __slots__ = ("command", "stdin", "tty", "words")

    def __init__(self, words: list[str], *, stdin: bool, tty: bool, command: int) -> None:
        self.words = words
        self.command = words[len(words) - command :]
        self.stdin = stdin
        self.tty = tty

    def run(self) -> None:
        """Run it as ``labctl exec`` does; raises SystemExit with the exit code.

        One server: :func:`lab.cli.exec_fast.run_fast` on blocking stdlib sockets (no trio,
        attrs or cattrs to import). Several: :func:`lab.cli.exec_run.run_exec` on trio."""
        from lab.runtime.exits import handle

        targets = [w for w in self.words[: -len(self.command)] if w.startswith("server/")]
        with handle():
            if len(targets) == 1:
                from lab.cli.exec_fast import run_fast

                code = run_fast(
                    targets[0].removeprefix("server/"),
                    self.command,
                    stdin=self.stdin,
                    tty=self.tty,
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
                kill_after=None,
                env=[],
                cwd=None,
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
    targets: list[str] = []
    for word in argv[1:cut]:
        if word in _FLAGS and not targets:
            flags[_FLAGS[word]] = True
        elif word.startswith("server/") and len(word) > len("server/"):
            targets.append(word)
        else:
            return None
    if not targets or not command:
        return None
    return PlainExec(
        [*targets, *command], stdin=flags["stdin"], tty=flags["tty"], command=len(command)
    )


__all__ = ["PlainExec", "plain_exec"]
