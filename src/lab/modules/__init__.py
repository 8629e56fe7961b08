"""Modules: versioned, validated jinja2 template sets of Kubernetes objects (module.yaml).

Pure: no I/O beyond reading a module's files, no trio. labd renders them for releases; labctl
lists, shows, lints and packages them.
"""

from lab.modules.render import Cluster, Release, Rendered, object_key, render
from lab.modules.sources import (
    Module,
    builtin_names,
    from_archive,
    load_builtin,
    load_directory,
    load_tarball,
    package,
    resolve,
)
from lab.modules.spec import ModuleSpec, parse_spec, satisfies
from lab.modules.values import check_values, redact, secret_paths, values_from

__all__ = [
    "Cluster",
    "Module",
    "ModuleSpec",
    "Release",
    "Rendered",
    "builtin_names",
    "check_values",
    "from_archive",
    "load_builtin",
    "load_directory",
    "load_tarball",
    "object_key",
    "package",
    "parse_spec",
    "redact",
    "render",
    "resolve",
    "satisfies",
    "secret_paths",
    "values_from",
]
