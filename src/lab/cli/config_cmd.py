"""labctl config: read and write labctl's own settings, and switch contexts."""

from __future__ import annotations

import sys

from cyclopts import App

from lab.cli.output import OutputOpt, check_format
from lab.runtime.output import emit

config_app = App(name="config", help="Read and write labctl's settings (~/.labctl/config.yaml).")


@config_app.command(name="list")
def list_(*, output: OutputOpt = "") -> None:
    """Show every setting, its value and where it comes from.

    Example: labctl config list -o json
    """
    from lab.client.settings import settings_sources
    from lab.runtime.exits import handle

    with handle():
        rows = [{"key": k, "value": v, "source": s} for k, v, s in settings_sources()]
    emit(rows, check_format(output), columns=("key", "value", "source"))


@config_app.command
def get(key: str) -> None:
    """Print the effective value of one setting (environment wins over the file).

    Example: labctl config get server

    Parameters
    ----------
    key
        The setting: server, output, timeout, bastion, ca_fingerprint or context.
    """
    from lab.client.settings import CliSettings, load_settings
    from lab.runtime.config import check_key
    from lab.runtime.exits import handle

    with handle():
        name = check_key(CliSettings, key)
        value = getattr(load_settings(), name)
    print(value)


@config_app.command(name="set")
def set_(key: str, value: str) -> None:
    """Write one setting to the config file (server and ca_fingerprint: to the current
    context's, when one is in use).

    Example: labctl config set server https://lab.example:3100

    Parameters
    ----------
    key
        The setting: server, output, timeout, bastion, ca_fingerprint or context.
    value
        Its new value, checked first: a URL, a format, seconds or a duration like 2m.
    """
    from lab.client import contexts
    from lab.client.home import CONTEXT_KEYS
    from lab.client.settings import CliSettings, check_value, set_setting
    from lab.runtime.config import check_key
    from lab.runtime.exits import handle

    with handle():
        name = check_key(CliSettings, key)
        current = contexts.selected()
        if name in CONTEXT_KEYS and current is not None:
            contexts.write(current, **{name: str(check_value(name, value))})
        else:
            set_setting(key, value)


@config_app.command
def path() -> None:
    """Print the path of the config file in use.

    Example: labctl config path
    """
    from lab.client.home import config_path

    print(config_path())


@config_app.command(name="get-contexts")
def get_contexts(*, output: OutputOpt = "") -> None:
    """List contexts (a labd and your identity there); * marks the current one.

    The first use moves an identity kept directly in ~/.labctl into a context named after
    its server.

    Example: labctl config get-contexts
    """
    from lab.cli.output import check_format
    from lab.client.contexts import listing
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        rows = listing()
    if is_data(fmt):
        emit(rows, fmt, kind="context")
    elif not rows:
        print("no contexts: labctl login creates one", file=sys.stderr)
    else:
        emit(rows, fmt, columns=("current", "name", "server"), wide=("ca_fingerprint",))


@config_app.command(name="use-context")
def use_context(name: str, /) -> None:
    """Make NAME the current context: later commands talk to its labd as its identity.

    Example: labctl config use-context homelab

    Parameters
    ----------
    name
        A context from labctl config get-contexts.
    """
    from lab.client.contexts import use
    from lab.client.home import read_context
    from lab.runtime.exits import handle

    with handle():
        use(name)
        server = read_context(name).get("server", "?")
    print(f"switched to context {name} ({server})")


@config_app.command(name="delete-context")
def delete_context(name: str, /) -> None:
    """Delete context NAME and the identity it holds (the certificate stays valid in labd
    until it expires or is revoked).

    Example: labctl config delete-context oldlab

    Parameters
    ----------
    name
        A context from labctl config get-contexts.
    """
    from lab.client.contexts import names, remove
    from lab.errors import NotFound
    from lab.runtime.exits import handle

    with handle():
        if name not in names():
            raise NotFound(
                f"no context named {name!r}", details={"hint": "labctl config get-contexts"}
            )
        remove(name)
    print(f"deleted context {name}")
