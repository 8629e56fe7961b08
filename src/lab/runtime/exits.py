"""Turn errors into one stderr line with a hint and a trustworthy exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lab.runtime.output import fail

# Exit codes scripts can rely on.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5
# labctl exec, as sh and ssh: the remote program is not executable / does not exist.
EXIT_CANNOT_EXECUTE = 126
EXIT_COMMAND_NOT_FOUND = 127

_EXIT_BY_CODE = {
    "invalid": EXIT_USAGE,
    "config": EXIT_USAGE,
    "permission_denied": EXIT_DENIED,
    "unauthenticated": EXIT_DENIED,
    "not_found": EXIT_NOT_FOUND,
    "unavailable": EXIT_UNAVAILABLE,
    # The agent's reasons a command did not start (lab.agent.dispatch.spawn_failure).
    "command_not_found": EXIT_COMMAND_NOT_FOUND,
    "command_not_executable": EXIT_CANNOT_EXECUTE,
    "no_such_directory": EXIT_ERROR,
}


@contextmanager
def handle() -> Iterator[None]:
    """Map LabError to ``error: message`` (and a ``hint:`` line) and its exit code.

    The message is the error's own words; ``details["fields"]`` (labd's field paths such as
    ``body.set``) is for programs, not shown.
    """
    from lab.errors import LabError

    try:
        yield
    except LabError as exc:
        hint = exc.details.get("hint")
        fail(exc.message, str(hint) if hint else None, _EXIT_BY_CODE.get(exc.code, EXIT_ERROR))
