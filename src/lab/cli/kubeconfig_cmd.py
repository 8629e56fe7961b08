"""labctl kubeconfig and labctl kubectl: reach a cluster through labd's /k8s proxy as yourself.

The kubeconfig names labd (``https://LABD/k8s/CLUSTER``) and the files of your own labd
identity (``ca.pem``, ``cert.pem``, ``key.pem`` of the current context): no cluster credential
is ever written on your machine, and every request is judged by labd's RBAC and audited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter


def _proxy_config(cluster: str, namespace: str | None) -> dict[str, Any]:
    from lab.client.contexts import identity_dir
    from lab.client.credentials import CA_FILE, CERT_FILE, KEY_FILE, LOGIN_HINT
    from lab.client.kubeconfig import check_cluster, proxy_kubeconfig
    from lab.client.settings import load_settings
    from lab.errors import Unauthenticated

    check_cluster(cluster)
    settings = load_settings()
    directory = identity_dir()
    files = {name: directory / name for name in (CA_FILE, CERT_FILE, KEY_FILE)}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing or not settings.server:
        raise Unauthenticated(
            f"no labd identity here ({', '.join(missing) or 'no server'})",
            details={"hint": LOGIN_HINT},
        )
    return proxy_kubeconfig(
        labd_url=settings.server,
        cluster=cluster,
        ca_file=files[CA_FILE].resolve(),
        cert_file=files[CERT_FILE].resolve(),
        key_file=files[KEY_FILE].resolve(),
        namespace=namespace,
    )


def _merge_target() -> Path:
    """The first file of ``$KUBECONFIG``, else ``~/.kube/config`` (what kubectl reads)."""
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(listed[0]).expanduser() if listed else Path.home() / ".kube" / "config"


def _write_yaml(path: Path, doc: dict[str, Any]) -> None:
    import yaml

    from lab.client.credentials import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False).encode(), mode=0o600)


def kubeconfig(
    cluster: str,
    /,
    *,
    namespace: Annotated[str | None, Parameter(name=["--namespace", "-n"])] = None,
    merge: bool = False,
) -> None:
    """Print a kubeconfig that reaches CLUSTER through labd, as you (no cluster credentials).

    Its server is labd's /k8s/CLUSTER and its credentials are your labd key and certificate
    files. With --merge it is added to $KUBECONFIG (its first file) or ~/.kube/config and made
    the current context (lab-CLUSTER) instead.

    Example: labctl kubeconfig home --namespace prod --merge

    Parameters
    ----------
    cluster
        A cluster labd knows (labctl get clusters).
    namespace
        The context's default namespace.
    merge
        Merge into your kubeconfig file and switch to it, instead of printing.
    """
    import yaml

    from lab.client.kubeconfig import merge_kubeconfig
    from lab.errors import Invalid
    from lab.runtime.exits import handle

    with handle():
        doc = _proxy_config(cluster, namespace)
        if not merge:
            print(yaml.safe_dump(doc, sort_keys=False), end="")
            return
        target = _merge_target()
        existing: Any = None
        if target.is_file():
            try:
                existing = yaml.safe_load(target.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise Invalid(
                    f"{target} is not YAML ({exc.__class__.__name__})",
                    details={"fields": ["kubeconfig"]},
                ) from None
            if existing is not None and not isinstance(existing, dict):
                raise Invalid(f"{target} is not a kubeconfig", details={"fields": ["kubeconfig"]})
        _write_yaml(target, merge_kubeconfig(existing, doc))
    print(f"context {doc['current-context']} written to {target} and made current")


def kubectl(cluster: str, /, *args: str) -> None:
    """Run kubectl against CLUSTER through labd, as you: labctl kubectl CLUSTER -- ARGS...

    The kubeconfig it uses (only names of your identity's files) is kept beside them as
    kubeconfig-CLUSTER. kubectl replaces labctl, so its exit code is the command's.

    Example: labctl kubectl home -- get pods -n prod

    Parameters
    ----------
    cluster
        A cluster labd knows.
    args
        kubectl's arguments, after --.
    """
    import shutil

    from lab.client.contexts import identity_dir
    from lab.errors import ConfigError
    from lab.runtime.exits import handle

    with handle():
        doc = _proxy_config(cluster, None)
        binary = shutil.which("kubectl")
        if binary is None:
            raise ConfigError(
                "kubectl is not installed",
                details={"hint": "install it (Debian: apt install kubernetes-client)"},
            )
        path = identity_dir() / f"kubeconfig-{cluster}"
        _write_yaml(path, doc)
    # An argv list, no shell; exec keeps the terminal and signals kubectl's (exec -it).
    os.execv(binary, [binary, "--kubeconfig", str(path), *args])  # noqa: S606
