"""labctl init: run labctl's daemons in the background on this box (standalone mode)."""

from __future__ import annotations

from cyclopts import App

init_app = App(name="init", help="Run labd, an agent or the bastion on this box in the background.")
labd_app = App(name="labd", help="labd, the master daemon.")
init_app.command(labd_app)
labd_app.command("lab.cli.init_labd:standalone_app", name="standalone", help="One labd on SQLite.")
init_app.command("lab.cli.init_agent:agent_app", name="agent", help="lab-agent, the node agent.")
init_app.command(
    "lab.cli.init_bastion:bastion_app", name="bastion", help="lab-bastion, the PXE server."
)
