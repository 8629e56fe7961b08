"""labctl apps: install, upgrade, rollback, history, status, diff, uninstall of app releases
(modules on clusters, kept by labd; docs/apps.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter

from lab.cli.modules_cmd import SetOpt, Sha256Opt, ValuesOpt
from lab.cli.output import OutputOpt

apps_app = App(
    name="apps",
    help="App releases: modules installed on clusters, with revisions kept in labd (docs/apps.md).",
)

ClusterOpt = Annotated[
    str, Parameter(name=["--cluster", "-c"], help="The cluster (labctl get clusters).")
]
NamespaceOpt = Annotated[
    str, Parameter(name=["-n", "--namespace"], help="The namespace of the release.")
]
ModuleOpt = Annotated[
    str,
    Parameter(help="A built-in NAME[@VERSION], a module directory or a .tar.gz (labctl modules)."),
]
DryRunOpt = Annotated[
    bool, Parameter(negative=(), help="Render and let the API server check; record nothing.")
]
WaitOpt = Annotated[
    bool,
    Parameter(
        negative=(), help="Wait until Deployments, StatefulSets, DaemonSets, Jobs are ready."
    ),
]
TimeoutOpt = Annotated[
    str, Parameter(name=["--timeout"], help="How long --wait waits (30s, 5m, 1h).")
]
RollbackOpt = Annotated[
    bool,
    Parameter(
        negative=(),
        help="On failure, go back to the last deployed revision (or remove a "
        "first install's objects).",
    ),
]
HistoryMaxOpt = Annotated[
    int, Parameter(help="Revisions kept for this release (0: labd's default, 10).")
]
COLUMNS = ("name", "namespace", "cluster", "revision", "status", "module", "updated")
HISTORY = ("revision", "status", "operation", "module", "requested_by", "updated", "description")


def base(cluster: str, namespace: str, name: str) -> str:
    from urllib.parse import quote

    parts = (quote(p, safe="") for p in (cluster, namespace, name))
    return "/api/apps/" + "/".join(parts)


def module_payload(ref: str, sha256: str) -> dict[str, str]:
    """What labd gets for ``--module``: a built-in by name and version, else the archive."""
    import base64

    from lab.modules import resolve

    module = resolve(ref, sha256 or None)
    if module.source == "builtin":
        return {"name": module.spec.name, "version": module.spec.version}
    return {"archive": base64.b64encode(module.archive()).decode(), "sha256": module.digest}


def read_values(files: Sequence[Path], sets: Sequence[str]) -> dict[str, Any]:
    from lab.errors import Invalid
    from lab.modules import values_from

    texts = []
    for path in files:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise Invalid(f"-f {path}: {exc.strerror}", details={"fields": ["values"]}) from exc
    return values_from(texts, sets)


def row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        **item,
        "module": f"{item.get('module')}@{item.get('version')}",
        "updated": item.get("updated_at") or item.get("created_at"),
    }


async def _call(
    method: str, path: str, payload: dict[str, Any] | None, *, within: float | None = None
) -> dict[str, Any]:
    from lab.client.api import LabClient

    async with LabClient.from_settings(timeout=within) as client:
        if method == "GET":
            answer: dict[str, Any] = await client.get(path)
        else:
            answer = await client.post(path, json=payload or {})
    return answer


def _print_outcome(answer: dict[str, Any], fmt: str, verb: str) -> None:
    from lab.runtime.output import emit, is_data

    if is_data(fmt):
        emit(answer, fmt)
        return
    if answer.get("dry_run"):
        print(f"dry run: {len(answer.get('objects', []))} objects would be applied")
        for obj in answer.get("objects", []):
            print(f"  {obj}")
        return
    print(
        f"{answer['name']}: revision {answer['revision']} {answer['status']} "
        f"({answer['module']}@{answer['version']}, {verb})"
    )
    for obj in answer.get("pruned", []):
        print(f"  pruned {obj}")
    for obj in answer.get("kept", []):
        print(f"  kept {obj}")


async def _deploy(
    verb: str,
    name: str,
    *,
    module: str,
    cluster: str,
    namespace: str,
    values: Sequence[Path],
    set_: Sequence[str],
    sha256: str,
    dry_run: bool,
    wait: bool,
    wait_timeout: str,
    rollback_on_failure: bool,
    history_max: int,
    reuse_values: bool,
    output: str,
    or_install: bool = False,
) -> None:
    from lab.cli.output import check_format
    from lab.client.durations import parse_duration
    from lab.runtime.exits import handle

    fmt = check_format(output)
    with handle():
        seconds = parse_duration(wait_timeout, field="timeout")
        payload = {
            "module": module_payload(module, sha256),
            "values": read_values(values, set_),
            "dry_run": dry_run,
            "wait": wait,
            "timeout": seconds,
            "rollback_on_failure": rollback_on_failure,
            "history_max": history_max,
        }
        if verb == "upgrade":
            payload["reuse_values"] = reuse_values
            payload["install"] = or_install
        answer = await _call(
            "POST", f"{base(cluster, namespace, name)}/{verb}", payload, within=seconds + 60
        )
    _print_outcome(answer, fmt, verb)


@apps_app.command
async def install(
    name: str,
    *,
    module: ModuleOpt,
    cluster: ClusterOpt,
    namespace: NamespaceOpt = "default",
    set_: SetOpt = (),
    values: ValuesOpt = (),
    sha256: Sha256Opt = "",
    dry_run: DryRunOpt = False,
    wait: WaitOpt = False,
    wait_timeout: TimeoutOpt = "5m",
    rollback_on_failure: RollbackOpt = False,
    history_max: HistoryMaxOpt = 0,
    output: OutputOpt = "",
) -> None:
    """Install a module as the release NAME (revision 1, or again after a failed install).

    Example: labctl apps install crdb --module cockroachdb --cluster home -n db -f tls.yaml --wait

    Parameters
    ----------
    name
        The release's name (a DNS label).
    """
    await _deploy(
        "install",
        name,
        module=module,
        cluster=cluster,
        namespace=namespace,
        values=values,
        set_=set_,
        sha256=sha256,
        dry_run=dry_run,
        wait=wait,
        wait_timeout=wait_timeout,
        rollback_on_failure=rollback_on_failure,
        history_max=history_max,
        reuse_values=False,
        output=output,
    )


@apps_app.command
async def upgrade(
    name: str,
    *,
    module: ModuleOpt,
    cluster: ClusterOpt,
    namespace: NamespaceOpt = "default",
    set_: SetOpt = (),
    values: ValuesOpt = (),
    reuse_values: Annotated[
        bool, Parameter(negative=(), help="Start from the deployed revision's values.")
    ] = False,
    or_install: Annotated[
        bool,
        Parameter(name=["--install"], negative=(), help="Install NAME when nothing is deployed."),
    ] = False,
    sha256: Sha256Opt = "",
    dry_run: DryRunOpt = False,
    wait: WaitOpt = False,
    wait_timeout: TimeoutOpt = "5m",
    rollback_on_failure: RollbackOpt = False,
    history_max: HistoryMaxOpt = 0,
    output: OutputOpt = "",
) -> None:
    """Upgrade NAME to a module (a new revision); values come from --set and -f alone
    unless --reuse-values.

    Example: labctl apps upgrade crdb --module cockroachdb --cluster home -n db --set replicas=5

    Parameters
    ----------
    name
        The release's name.
    """
    await _deploy(
        "upgrade",
        name,
        module=module,
        cluster=cluster,
        namespace=namespace,
        values=values,
        set_=set_,
        sha256=sha256,
        dry_run=dry_run,
        wait=wait,
        wait_timeout=wait_timeout,
        rollback_on_failure=rollback_on_failure,
        history_max=history_max,
        reuse_values=reuse_values,
        output=output,
        or_install=or_install,
    )


@apps_app.command
async def rollback(
    name: str,
    revision: int = 0,
    *,
    cluster: ClusterOpt,
    namespace: NamespaceOpt = "default",
    dry_run: DryRunOpt = False,
    wait: WaitOpt = False,
    wait_timeout: TimeoutOpt = "5m",
    output: OutputOpt = "",
) -> None:
    """Go back to REVISION (default: the one before the deployed one) as a new revision.

    Example: labctl apps rollback crdb 1 --cluster home -n db

    Parameters
    ----------
    name
        The release's name.
    revision
        The revision to copy (labctl apps history NAME).
    """
    from lab.cli.output import check_format
    from lab.client.durations import parse_duration
    from lab.runtime.exits import handle

    fmt = check_format(output)
    with handle():
        seconds = parse_duration(wait_timeout, field="timeout")
        answer = await _call(
            "POST",
            f"{base(cluster, namespace, name)}/rollback",
            {"revision": revision, "dry_run": dry_run, "wait": wait, "timeout": seconds},
            within=seconds + 60,
        )
    _print_outcome(answer, fmt, f"rollback to {answer.get('rolled_back_to', revision)}")


@apps_app.command
async def history(
    name: str, *, cluster: ClusterOpt, namespace: NamespaceOpt = "default", output: OutputOpt = ""
) -> None:
    """The kept revisions of NAME, oldest first, with status, module and who.

    Example: labctl apps history crdb --cluster home -n db -o json

    Parameters
    ----------
    name
        The release's name.
    """
    from lab.cli.output import check_format
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        items = (await _call("GET", f"{base(cluster, namespace, name)}/history", None))["items"]
    if is_data(fmt):
        emit(items, fmt)
    else:
        emit([row(i) for i in items], fmt, columns=HISTORY)


@apps_app.command
async def status(
    name: str, *, cluster: ClusterOpt, namespace: NamespaceOpt = "default", output: OutputOpt = ""
) -> None:
    """The deployed state of NAME: its newest revision and each object's readiness.

    Example: labctl apps status crdb --cluster home -n db

    Parameters
    ----------
    name
        The release's name.
    """
    from lab.cli.output import check_format
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        answer = await _call("GET", base(cluster, namespace, name), None)
    if is_data(fmt):
        emit(answer, fmt)
        return
    print(
        f"{answer['name']}: revision {answer['revision']} {answer['status']} "
        f"({answer['module']}@{answer['version']}) {answer['description']}"
    )
    emit(answer["objects"], fmt, columns=("object", "ready", "detail"))


@apps_app.command
async def diff(
    name: str,
    *,
    cluster: ClusterOpt,
    namespace: NamespaceOpt = "default",
    module: Annotated[
        str, Parameter(help="The module to compare with (default: the release's own).")
    ] = "",
    set_: SetOpt = (),
    values: ValuesOpt = (),
    reuse_values: Annotated[
        bool, Parameter(negative=(), help="Start from the deployed revision's values.")
    ] = False,
    sha256: Sha256Opt = "",
) -> None:
    """The unified diff between NAME's deployed manifest and what an upgrade would apply
    (Secret values redacted). Exit code 1 when they differ.

    Example: labctl apps diff crdb --cluster home -n db --reuse-values --set replicas=5

    Parameters
    ----------
    name
        The release's name.
    """
    from lab.runtime.exits import handle

    with handle():
        path = base(cluster, namespace, name)
        # Without --module labd renders the release's own module again (it keeps them).
        source = module_payload(module, sha256) if module else None
        answer = await _call(
            "POST",
            f"{path}/diff",
            {"module": source, "values": read_values(values, set_), "reuse_values": reuse_values},
        )
    text = str(answer.get("diff", ""))
    print(text, end="")
    if text:
        raise SystemExit(1)


@apps_app.command
async def uninstall(
    name: str,
    *,
    cluster: ClusterOpt,
    namespace: NamespaceOpt = "default",
    keep_history: Annotated[
        bool, Parameter(negative=(), help="Keep the revisions (the newest marked uninstalled).")
    ] = False,
    delete_data: Annotated[
        bool, Parameter(negative=(), help="Delete the module's data objects too (PVCs...).")
    ] = False,
    output: OutputOpt = "",
) -> None:
    """Delete NAME's objects (its data objects only with --delete-data) and its history.

    Example: labctl apps uninstall crdb --cluster home -n db --keep-history

    Parameters
    ----------
    name
        The release's name.
    """
    from lab.cli.output import check_format
    from lab.runtime.exits import handle

    fmt = check_format(output)
    with handle():
        answer = await _call(
            "POST",
            f"{base(cluster, namespace, name)}/uninstall",
            {"keep_history": keep_history, "delete_data": delete_data},
        )
    _print_outcome(answer, fmt, "uninstall")


async def get_apps(names: Sequence[str], cluster: str, namespace: str, output: str) -> None:
    """``labctl get apps``: the newest revision of each release (filtered by names)."""
    import sys

    from lab.cli.output import check_format
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    params = {k: v for k, v in (("cluster", cluster), ("namespace", namespace)) if v}
    with handle():
        from lab.client.api import LabClient

        async with LabClient.from_settings() as client:
            items = (await client.get("/api/apps", params=params))["items"]
    wanted = {n.partition("/")[2] if "/" in n else n for n in names}
    if wanted:
        items = [i for i in items if i["name"] in wanted]
    if is_data(fmt):
        emit(items, fmt, kind="app")
    elif not items:
        print("no apps", file=sys.stderr)
    else:
        emit([row(i) for i in items], fmt, columns=COLUMNS)
