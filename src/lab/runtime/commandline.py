"""Every program's command line behaves the same: labctl, labd, lab-agent, lab-bastion.

``--help`` and ``--version`` print and exit 0 before anything else runs; a parse error (an
unknown option, a missing or extra argument, a value of the wrong type) is one ``error:`` line
in the user's words plus a ``hint:`` line naming the help to read, and exits 2.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

from cyclopts import App, CycloptsError
from cyclopts.exceptions import MissingArgumentError, UnusedCliTokensError

_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL,
)

EXIT_USAGE = 2


def report(message: str, hint: str | None = None, *, program: str = "") -> None:
    """Print ``error: message`` (and ``hint: hint``) to stderr, prefixed with ``program: ``."""
    prefix = f"{program}: " if program else ""
    lines = [f"{prefix}error: {one_line(message)}"]
    if hint:
        lines.append(f"{prefix}hint: {one_line(hint)}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return " ".join(text.split())


def parse_error_message(exc: CycloptsError) -> str:
    """What went wrong, as the user typed it: ``unknown option: --bogus``."""
    if isinstance(exc, UnusedCliTokensError):
        tokens = [str(t) for t in exc.unused_tokens or ()]
        word = "argument" if len(tokens) == 1 else "arguments"
        return f"unexpected {word}: {' '.join(tokens)}"
    if isinstance(exc, MissingArgumentError) and exc.argument is not None:
        name = exc.argument.names[0] if exc.argument.names else "?"
        kind = getattr(exc.argument.field_info, "kind", None)
        if kind in _POSITIONAL:
            return f"missing argument {name.lstrip('-').upper().replace('-', '_')}"
        return f"missing option {name}"
    text = one_line(str(exc)).rstrip(".")
    # "Did you mean" is worth a line; the list of every command is what --help is for.
    text = text.split(" Available commands:")[0].rstrip(".")
    return text[:1].lower() + text[1:]


def run_app(app: App, argv: Sequence[str] | None = None, *, program: str = "") -> Any:
    """Run ``app`` on ``argv`` (default ``sys.argv[1:]``); parse errors exit 2 in two lines.

    ``program`` prefixes the lines (daemons write to a shared journal); labctl passes none.
    """
    name = app.name[0] if app.name else "labctl"
    try:
        return app(
            list(argv) if argv is not None else None,
            exit_on_error=False,
            print_error=False,
            help_on_error=False,
        )
    except CycloptsError as exc:
        chain = " ".join((name, *(exc.command_chain or ())))
        report(parse_error_message(exc), f"see {chain} --help", program=program)
        raise SystemExit(EXIT_USAGE) from None
