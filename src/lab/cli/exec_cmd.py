"""labctl exec: run a command on one server (stdin, tty) or many (prefixed output, summary).

The command line is here; the work is :func:`lab.cli.exec_run.run_exec`.
"""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from lab.cli.exec_run import run_exec
from lab.cli.targets import SelectorOpt


async def exec_command(
    *words: str,
    stdin: Annotated[bool, Parameter(name=["-i", "--stdin"], negative=())] = False,
    tty: Annotated[bool, Parameter(name=["-t", "--tty"], negative=())] = False,
    kill_after: Annotated[
        str | None, Parameter(name="--timeout", help="Stop the command after: 30s, 10m, 1h")
    ] = None,
    env: Annotated[
        list[str] | None,
        Parameter(
            name=["--env", "-e"], consume_multiple=False, negative=(), help="K=V, repeatable"
        ),
    ] = None,
    cwd: Annotated[str | None, Parameter(help="Working directory on the server")] = None,
    selector: SelectorOpt = (),
    parallel: Annotated[int, Parameter(help="Servers running at once (fan-out)")] = 32,
) -> None:
    """Run a command on servers; labctl exits with its exit code.

    Name targets as server/NAME (several for a fan-out) or select them with -l (kubectl's
    selectors: 'role=db,zone!=a'; servers named too are added); everything after -- is the
    command, never joined into a shell string. With one server, stdout and stderr stream as
    they come; -i sends stdin, -t runs on a pseudo-terminal. With several, each line is
    prefixed by its server and a summary ends the output; labctl exits 1 if any failed. A
    signal exits 128+N; a program that does not exist exits 127, one that is not executable
    126; Ctrl-C interrupts the remote command.

    Example: labctl exec server/web1 -- uname -a

    Example: labctl exec -l role=worker --parallel 10 -- sh -c 'df -h /'

    Parameters
    ----------
    words
        server/NAME targets, then -- and the command with its arguments.
    stdin
        Send labctl's stdin to the command (one server only).
    tty
        Run the command on a pseudo-terminal (one server only; with -i for a shell).
    """
    from lab.runtime.exits import handle

    with handle():
        code = await run_exec(
            list(words),
            stdin=stdin,
            tty=tty,
            kill_after=kill_after,
            env=env or [],
            cwd=cwd,
            selector=selector,
            parallel=parallel,
        )
    raise SystemExit(code)
