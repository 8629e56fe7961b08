"""labctl's entry point: ``main`` runs the command tree (:mod:`lab.cli.commands`).

This module imports nothing heavy at the top: ``labctl exec server/NAME -- CMD``, the hot verb,
runs without building the command tree or importing cyclopts (:mod:`lab.cli.fastpath`).
``app`` is still importable from here (it is built on first access).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from lab.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FILE_VERBS = ("apply", "diff", "delete")


def stdin_files(argv: list[str]) -> list[str]:
    """``-f -`` (standard input) of apply, diff and delete as ``-f=-``: the parser would take
    a lone ``-`` for an option and report ``-f`` missing."""
    if not argv or argv[0] not in FILE_VERBS:
        return argv
    out: list[str] = []
    for word in argv:
        if word == "-" and out and out[-1] in ("-f", "--filename"):
            out[-1] = f"{out[-1]}=-"
        else:
            out.append(word)
    return out


# What a process killed by SIGPIPE reports to its shell (128 + 13), as coreutils do.
EXIT_BROKEN_PIPE = 141


def main() -> None:
    """Run labctl. A closed stdout (``labctl get audit | head -1``) ends it quietly with 141;
    a parse error is an ``error:`` line and a ``hint:`` line, exit 2."""
    import sys

    try:
        argv = take_context(sys.argv[1:])
        from lab.cli.fastpath import plain_exec

        plain = plain_exec(argv)
        if plain is not None:
            plain.run()
        from lab.cli.commands import app
        from lab.runtime.commandline import run_app

        run_app(app, stdin_files(argv))
    except BaseException as exc:
        if not _only_broken_pipes(exc):
            raise
        _quiet_exit_on_broken_pipe()


# Commands whose own --context option names something else (a kubeconfig context): after
# their words, --context belongs to them; labctl's context goes before (or LABCTL_CONTEXT).
OWN_CONTEXT_OPTION = (("clusters", "import"),)


def _own_context_from(argv: list[str]) -> int | None:
    """The index where a command with its own ``--context`` starts, if ``argv`` runs one."""
    words = [(i, w) for i, w in enumerate(argv) if not w.startswith("-")]
    for path in OWN_CONTEXT_OPTION:
        for start in range(len(words) - len(path) + 1):
            if tuple(w for _, w in words[start : start + len(path)]) == path:
                return words[start][0]
    return None


def take_context(argv: list[str]) -> list[str]:
    """``--context NAME`` (or ``--context=NAME``) anywhere before ``--`` selects the context
    for this one command (``LABCTL_CONTEXT``); the rest of ``argv`` is returned. For the
    commands of :data:`OWN_CONTEXT_OPTION` only a ``--context`` before the command counts."""
    import os

    rest: list[str] = []
    own = _own_context_from(argv)
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--" or (own is not None and i >= own):
            rest += argv[i:]
            break
        if word == "--context" and i + 1 < len(argv):
            os.environ["LABCTL_CONTEXT"] = argv[i + 1]
            i += 2
            continue
        if word.startswith("--context="):
            os.environ["LABCTL_CONTEXT"] = word.partition("=")[2]
        else:
            rest.append(word)
        i += 1
    return rest


def _only_broken_pipes(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_broken_pipes(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def _quiet_exit_on_broken_pipe() -> None:
    import os
    import sys

    # Python flushes stdout at exit, which would fail (and print) once more: point the
    # descriptor at /dev/null first.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    raise SystemExit(EXIT_BROKEN_PIPE)


if __name__ == "__main__":
    main()
