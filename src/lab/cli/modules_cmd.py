"""labctl modules: list the built-ins, show one, lint a module directory, package it.

Local only (no labd): what `apps install --module` will send is checked here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

modules_app = App(
    name="modules",
    help="App modules: versioned template sets with a values schema (docs/apps.md).",
)

SetOpt = Annotated[
    tuple[str, ...],
    Parameter(name=["--set"], help="KEY=VALUE (KEY may be a.b.c); repeat; after -f.", negative=()),
]
ValuesOpt = Annotated[
    tuple[Path, ...],
    Parameter(
        name=["-f", "--values"], help="A YAML file of values; repeat, later ones win.", negative=()
    ),
]
Sha256Opt = Annotated[
    str,
    Parameter(help="The sha256 of a .tar.gz module (default: the FILE.sha256 beside it)."),
]


@modules_app.command(name="list")
def list_modules(*, output: OutputOpt = "") -> None:
    """List the built-in modules shipped with this labctl.

    Example: labctl modules list
    """
    from lab.cli.output import check_format
    from lab.modules import builtin_names, load_builtin
    from lab.runtime.exits import handle
    from lab.runtime.output import emit

    fmt = check_format(output)
    with handle():
        rows = []
        for name in builtin_names():
            spec = load_builtin(name).spec
            rows.append({"name": name, "version": spec.version, "description": spec.description})
    emit(rows, fmt, columns=("name", "version", "description"), kind="module")


@modules_app.command
def show(module: str, *, sha256: Sha256Opt = "", output: OutputOpt = "yaml") -> None:
    """Print a module's module.yaml (checked), its templates and its digest.

    Example: labctl modules show cockroachdb

    Parameters
    ----------
    module
        A built-in NAME[@VERSION], a module directory or a .tar.gz.
    """
    from lab.cli.output import check_format
    from lab.modules import resolve
    from lab.runtime.exits import handle
    from lab.runtime.output import emit

    fmt = check_format(output)
    with handle():
        found = resolve(module, sha256 or None)
    doc = {
        **found.spec.as_dict(),
        "source": found.source,
        "templates": sorted(found.templates),
        "sha256": found.digest,
    }
    emit(doc, "yaml" if fmt in ("table", "wide") else fmt)


@modules_app.command
def lint(
    directory: Path,
    *,
    values: ValuesOpt = (),
    set_: SetOpt = (),
    namespace: Annotated[
        str, Parameter(name=["-n", "--namespace"], help="The release namespace to render for.")
    ] = "default",
    kubernetes: Annotated[
        str, Parameter(help="The cluster's version to check requires against.")
    ] = "",
) -> None:
    """Check a module: module.yaml against its schema, the values, and that every template
    renders to Kubernetes objects; print the objects' keys.

    Example: labctl modules lint ./mymodule --set password=x

    Parameters
    ----------
    directory
        The module's directory (module.yaml and templates/) or a .tar.gz.
    """
    from lab.modules import Cluster, Release, check_values, render, resolve, values_from
    from lab.modules.spec import placeholder_certificates
    from lab.runtime.exits import handle

    with handle():
        module = resolve(str(directory))
        given = values_from([p.read_text(encoding="utf-8") for p in values], set_)
        # What labd issues from its CA at install (x-labd-certificates), as placeholders.
        given = {**placeholder_certificates(module.spec), **given}
        checked = check_values(module.spec.parameters, given)
        out = render(
            module,
            checked,
            release=Release(name=module.spec.name, namespace=namespace, revision=1),
            cluster=Cluster(name="lint", version=kubernetes),
        )
    for key in out.object_keys():
        print(key)
    print(f"ok: {module.spec.ref}, {len(out.objects)} objects, manifest sha256 {out.digest}")


@modules_app.command
def package(
    directory: Path,
    *,
    destination: Annotated[Path, Parameter(name=["-d", "--destination"])] = Path(),
) -> None:
    """Write NAME-VERSION.tar.gz (deterministic) and NAME-VERSION.tar.gz.sha256 of a module.

    Example: labctl modules package ./mymodule -d dist/

    Parameters
    ----------
    directory
        The module's directory.
    destination
        Where the two files go (default: the current directory).
    """
    from lab.modules import package as write_package
    from lab.runtime.exits import handle

    with handle():
        target, digest = write_package(directory, destination)
    print(f"{target}\nsha256 {digest}")
