"""labctl config: read and write labctl's own settings."""

from __future__ import annotations

from cyclopts import App

from lab.cli.output import OutputOpt, check_format, emit

config_app = App(name="config", help="Read and write labctl's settings (~/.labctl/config.yaml).")


@config_app.command(name="list")
def list_(*, output: OutputOpt = "") -> None:
    """Show every setting, its value and where it comes from.

    Example: labctl config list -o json
    """
    from lab.cli.errors import handle
    from lab.cli.settings import settings_sources

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
        The setting: server, output, timeout, bastion or ca_fingerprint.
    """
    from lab.cli.errors import handle
    from lab.cli.settings import CliSettings, load_settings
    from lab.runtime.config import check_key

    with handle():
        name = check_key(CliSettings, key)
        value = getattr(load_settings(), name)
    print(value)


@config_app.command(name="set")
def set_(key: str, value: str) -> None:
    """Write one setting to the config file.

    Example: labctl config set server https://lab.example:3100

    Parameters
    ----------
    key
        The setting: server, output, timeout, bastion or ca_fingerprint.
    value
        Its new value, checked first: a URL, a format, seconds or a duration like 2m.
    """
    from lab.cli.errors import handle
    from lab.cli.settings import set_setting

    with handle():
        set_setting(key, value)


@config_app.command
def path() -> None:
    """Print the path of the config file in use.

    Example: labctl config path
    """
    from lab.cli.settings import config_path

    print(config_path())
