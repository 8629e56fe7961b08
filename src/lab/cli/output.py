"""labctl's ``-o`` option: the formats of :mod:`lab.runtime.output`, defaulting to the
``output`` setting."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from lab.runtime import output

OutputOpt = Annotated[
    str,
    Parameter(
        name=["-o", "--output"],
        help="table, wide, json, yaml, name or jsonpath=EXPR; default: the output setting "
        "(LABCTL_OUTPUT), else table.",
        show_default=False,
    ),
]
"""The ``-o`` option of every command that prints resources; its default ``""`` means "the
output setting", which :func:`check_format` resolves."""


def check_format(fmt: str | None) -> str:
    """``fmt`` checked; empty means the ``output`` setting (LABCTL_OUTPUT, config file)."""
    if not fmt:
        # Lazy: settings read YAML, which the commands that never print need not load.
        from lab.client.settings import load_settings
        from lab.runtime.exits import handle

        with handle():
            fmt = load_settings().output
    return output.check_format(fmt)
