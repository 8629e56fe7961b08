"""The labctl command tree. Sub-commands load lazily so `labctl --help` stays fast; the
program itself is :func:`lab.cli.main.main`."""

from __future__ import annotations

from typing import Literal

from cyclopts import App

from lab import __version__
from lab.cli.apply_cmd import apply_command, delete_command, diff_command
from lab.cli.describe_cmd import describe
from lab.cli.exec_cmd import exec_command
from lab.cli.label_cmd import label

# Loaded at once (light modules; their heavy imports wait inside the commands), so their
# docstrings are both the list's line and the command's full --help.
from lab.cli.login import login_command, logout, whoami
from lab.cli.logs_cmd import logs_command

app = App(
    name="labctl",
    help="Operate a lab: servers, agents, PXE provisioning, access control and audit.\n\n"
    "--context NAME on any command talks to that context's labd (labctl config get-contexts).",
    version=__version__,
    backend="trio",
)

app.command(
    "lab.cli.config_cmd:config_app", name="config", help="Read and write labctl's settings."
)
app.command(
    "lab.cli.init_cmd:init_app", name="init", help="Run labd, an agent or the bastion on this box."
)
app.command(login_command, name="login")
app.command(logout, name="logout")
app.command(whoami, name="whoami")
app.command(
    "lab.cli.tokens_cmd:tokens_app", name="tokens", help="Join tokens for agents and users."
)
app.command("lab.cli.certs_cmd:certs_app", name="certs", help="Issued certificates.")
app.command("lab.cli.certs_cmd:ca_app", name="ca", help="labd's CA: status and rotation.")
app.command(
    "lab.cli.users_cmd:users_app", name="users", help="People who use labd and their roles."
)
app.command("lab.cli.roles_cmd:roles_app", name="roles", help="Roles and their allow/deny rules.")
app.command(
    "lab.cli.auth_cmd:auth_app", name="auth", help="Ask RBAC: can-i, and explain a decision."
)
app.command(
    "lab.cli.audit_cmd:audit_app", name="audit", help="The audit log: verify its chain, export it."
)
app.command(exec_command, name="exec")
app.command(logs_command, name="logs")
app.command(
    "lab.cli.provision:provision_app",
    name="provision",
    help="PXE provisioning through the bastion: machines, installs, reprovisioning.",
)
app.command(
    "lab.cli.get_cmd:get_app",
    name="get",
    help="Show resources: servers, users, roles, tokens, certs, audit.\n\n"
    "Example: labctl get servers -l 'role=worker,zone!=a' -o wide",
)
app.command(
    "lab.cli.power_cmd:power_app",
    name="power",
    help="Power control: status, on, off, cycle, reset; set a machine's driver.",
)
app.command(
    "lab.cli.apps_cmd:apps_app",
    name="apps",
    help="App releases on clusters: install, upgrade, rollback, history, status, diff, uninstall.",
)
app.command(
    "lab.cli.modules_cmd:modules_app",
    name="modules",
    help="App modules: list the built-ins, show, lint and package a module.",
)
app.command(
    "lab.cli.clusters_cmd:clusters_app",
    name="clusters",
    help="Kubernetes clusters: create k3s on enrolled servers, day-2 operations, import one.",
)
app.command(
    "lab.cli.artifacts_cmd:artifacts_app",
    name="artifacts",
    help="Artifacts: files labd keeps for the agents, e.g. k3s binaries (docs/clusters.md).",
)
app.command(
    "lab.cli.kubeconfig_cmd:kubeconfig",
    name="kubeconfig",
    help="A kubeconfig reaching a cluster through labd as you (no cluster credentials).\n\n"
    "Example: labctl kubeconfig home --namespace prod --merge",
)
app.command(
    "lab.cli.kubeconfig_cmd:kubectl",
    name="kubectl",
    help="Run kubectl against a cluster through labd, as you.\n\n"
    "Example: labctl kubectl home -- get pods -n prod",
)
app.command(apply_command, name="apply")
app.command(diff_command, name="diff")
app.command(delete_command, name="delete")
app.command(describe, name="describe")
app.command(label, name="label")


@app.command
def version() -> None:
    """Print labctl's version.

    Example: labctl version
    """
    print(f"labctl {__version__}")


@app.command
def completion(shell: Literal["bash", "zsh", "fish"], /) -> None:
    """Print a shell completion script for labctl.

    bash: source <(labctl completion bash) in ~/.bashrc; zsh: labctl completion zsh >
    "${fpath[1]}/_labctl"; fish: labctl completion fish > ~/.config/fish/completions/labctl.fish.

    Example: labctl completion bash > /etc/bash_completion.d/labctl

    Parameters
    ----------
    shell
        bash, zsh or fish.
    """
    print(app.generate_completion(prog_name="labctl", shell=shell), end="")


@app.command
def doctor() -> None:
    """Check this box's labctl setup; one line per check with a hint.

    Config, labd reachable and healthy, certificate expiry, clock skew, labd's CA fingerprint,
    the bastion, dnsmasq, the default ports. Exits 1 if a check failed (warnings do not).
    Example: labctl doctor
    """
    from lab.cli.doctor import run_doctor

    run_doctor()
