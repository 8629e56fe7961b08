"""The labctl command tree. Sub-commands load lazily so `labctl --help` stays fast."""

from __future__ import annotations

from cyclopts import App

from lab import __version__

app = App(
    name="labctl",
    help="Operate a lab: servers, agents, PXE provisioning, access control and audit.",
    version=__version__,
    backend="trio",
)

app.command(
    "lab.cli.config_cmd:config_app", name="config", help="Read and write labctl's settings."
)
app.command(
    "lab.cli.init_cmd:init_app", name="init", help="Run labd, an agent or the bastion on this box."
)


@app.command
def version() -> None:
    """Print labctl's version.

    Example: labctl version
    """
    print(f"labctl {__version__}")


@app.command
def doctor() -> None:
    """Check config, labd reachability and health; one line per check with a hint.

    Exits 1 if any check fails. Example: labctl doctor
    """
    from lab.cli.doctor import run_doctor

    run_doctor()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
