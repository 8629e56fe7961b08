"""``module.yaml``: parsed, checked against ``schema/module.schema.json``, and version rules.

A module is a versioned set of Kubernetes object templates plus the JSON Schema (draft 2020-12)
of the values they take. This file knows the metadata only; :mod:`lab.modules.sources` reads
modules from disk and :mod:`lab.modules.render` renders them.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.resources
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import yaml

from lab.errors import ConfigError, Invalid

_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?"
)
_LOOSE = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")
_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([0-9][0-9A-Za-z.+-]*)\s*")

HOOK_EVENTS = tuple(
    f"{when}-{op}"
    for op in ("install", "upgrade", "rollback", "uninstall")
    for when in ("pre", "post")
)


def schema_path() -> Path:
    """``lab/_data/schema/module.schema.json`` in a wheel, else ``schema/`` of the checkout."""
    shipped = importlib.resources.files("lab") / "_data" / "schema" / "module.schema.json"
    if shipped.is_file():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[3] / "schema" / "module.schema.json"
    if checkout.is_file():
        return checkout
    raise ConfigError("module.schema.json not found (neither lab/_data/schema nor schema/)")


@functools.cache
def _module_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """A sort key: ``1.2.0-rc1`` sorts below ``1.2.0``; Invalid for a non-version."""
    found = _SEMVER.fullmatch(version.strip()) or _LOOSE.fullmatch(version.strip().lstrip("v"))
    if found is None:
        raise Invalid(f"not a version: {version!r}", details={"fields": ["version"]})
    groups = found.groups()
    major, minor, patch = (int(g or 0) for g in groups[:3])
    pre = groups[3] if len(groups) > 3 and groups[3] else ""
    return (major, minor, patch, 0 if pre else 1, pre)


def satisfies(version: str, constraint: str) -> bool:
    """Whether ``version`` meets every comma-separated clause of ``constraint`` (``>=1.28,<2``).

    Kubernetes versions such as ``v1.31.2+k3s1`` compare by their numbers.
    """
    have = version_key(_numbers(version))
    for clause in constraint.split(","):
        found = _CLAUSE.fullmatch(clause)
        if found is None:
            raise Invalid(f"not a version constraint: {constraint!r}")
        op, want = found.group(1), version_key(_numbers(found.group(2)))
        ok = {
            ">=": have >= want,
            "<=": have <= want,
            ">": have > want,
            "<": have < want,
            "==": have == want,
            "!=": have != want,
        }[op]
        if not ok:
            return False
    return True


def _numbers(version: str) -> str:
    text = version.strip().lstrip("v")
    found = _SEMVER.fullmatch(text)
    if found:
        return text
    head = re.match(r"[0-9]+(?:\.[0-9]+){0,2}", text)
    if head is None:
        raise Invalid(f"not a version: {version!r}", details={"fields": ["version"]})
    return head.group(0)


@attrs.frozen(kw_only=True)
class DataSelector:
    """Objects that hold data (``kind`` and a ``name`` that may end in ``*``)."""

    kind: str
    name: str

    def matches(self, kind: str, name: str) -> bool:
        return kind == self.kind and fnmatch.fnmatchcase(name, self.name)


@attrs.frozen(kw_only=True)
class Dependency:
    module: str
    version: str = ""
    optional: bool = False


@attrs.frozen(kw_only=True)
class ModuleSpec:
    """What ``module.yaml`` says, checked."""

    name: str
    version: str
    description: str = ""
    requires: Mapping[str, str] = attrs.field(factory=dict)
    parameters: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object"})
    dependencies: Sequence[Dependency] = ()
    data: Sequence[DataSelector] = ()
    hooks: Mapping[str, Sequence[str]] = attrs.field(factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def is_data(self, kind: str, name: str) -> bool:
        return any(selector.matches(kind, name) for selector in self.data)

    def hook_templates(self) -> set[str]:
        return {path for paths in self.hooks.values() for path in paths}

    def as_dict(self) -> dict[str, Any]:
        """The module.yaml document again (what ``labctl modules show`` prints)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description:
            out["description"] = self.description
        if self.requires:
            out["requires"] = dict(self.requires)
        out["parameters"] = self.parameters
        if self.dependencies:
            out["dependencies"] = [attrs.asdict(d) for d in self.dependencies]
        if self.data:
            out["data"] = [attrs.asdict(d) for d in self.data]
        if self.hooks:
            out["hooks"] = {k: list(v) for k, v in self.hooks.items()}
        return out


def _field(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path) or "(document)"


def parse_spec(text: str, *, where: str = "module.yaml") -> ModuleSpec:
    """Parse and check ``module.yaml``; Invalid naming the field and the rule otherwise."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid(f"{where}: not YAML: {exc}", details={"fields": [where]}) from exc
    if not isinstance(doc, dict):
        raise Invalid(f"{where}: must be a mapping", details={"fields": [where]})
    errors = sorted(_module_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        fields = [_field(e.absolute_path) for e in errors]
        raise Invalid(
            f"{where}: {_field(first.absolute_path)}: {first.message} (rule {first.validator})",
            details={"fields": fields},
        )
    parameters = doc.get("parameters") or {"type": "object"}
    try:
        jsonschema.Draft202012Validator.check_schema(parameters)
    except jsonschema.SchemaError as exc:
        field = "parameters." + _field(exc.absolute_path) if exc.absolute_path else "parameters"
        raise Invalid(
            f"{where}: {field} is not a JSON Schema: {exc.message}", details={"fields": [field]}
        ) from exc
    stray = _stray_secret(parameters, "parameters")
    if stray is not None:
        raise Invalid(
            f"{where}: {stray}: labd seals only fields reached through properties",
            details={"fields": [stray]},
        )
    return ModuleSpec(
        name=doc["name"],
        version=doc["version"],
        description=doc.get("description", ""),
        requires=dict(doc.get("requires") or {}),
        parameters=parameters,
        dependencies=tuple(Dependency(**d) for d in doc.get("dependencies") or ()),
        data=tuple(DataSelector(**d) for d in doc.get("data") or ()),
        hooks={event: tuple(paths) for event, paths in (doc.get("hooks") or {}).items()},
    )


# Keywords whose values are data, not schemas.
_DATA_KEYWORDS = frozenset({"default", "examples", "const", "enum"})


def _stray_secret(schema: Any, field: str, honoured: bool = True) -> str | None:
    """The first ``secret: true`` that labd would not honour (under ``items``, ``anyOf``,
    ``additionalProperties``...: its value would be stored and shown in the clear)."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            found = _stray_secret(item, f"{field}.{index}", False)
            if found is not None:
                return found
        return None
    if not isinstance(schema, Mapping):
        return None
    if schema.get("secret") is True and not honoured:
        return f"{field}.secret"
    for key, sub in schema.items():
        if key == "properties" and isinstance(sub, Mapping):
            for name, prop in sub.items():
                found = _stray_secret(prop, f"{field}.properties.{name}", honoured)
                if found is not None:
                    return found
        elif key not in _DATA_KEYWORDS:
            found = _stray_secret(sub, f"{field}.{key}", False)
            if found is not None:
                return found
    return None


CERTIFICATES = "x-labd-certificates"
_CERT_KEYS = {"common_name", "hosts", "server", "client"}


def certificate_requests(spec: ModuleSpec) -> dict[str, Mapping[str, Any]]:
    """The parameters that ask labd for certificates (``x-labd-certificates``, docs/apps.md),
    checked: ``{parameter: {entry: {common_name, hosts, server, client}}}``."""
    out: dict[str, Mapping[str, Any]] = {}
    for field, schema in (spec.parameters.get("properties") or {}).items():
        wanted = schema.get(CERTIFICATES) if isinstance(schema, Mapping) else None
        if wanted is None:
            continue
        where = f"parameters.properties.{field}.{CERTIFICATES}"
        if not isinstance(wanted, Mapping) or not wanted:
            raise Invalid(f"{spec.ref}: {where} must map names to certificates")
        for name, entry in wanted.items():
            ok = (
                isinstance(entry, Mapping)
                and set(entry) <= _CERT_KEYS
                and isinstance(entry.get("common_name"), str)
                and isinstance(entry.get("hosts", []), list)
                and all(isinstance(h, str) for h in entry.get("hosts", []))
                and all(isinstance(entry.get(k, False), bool) for k in ("server", "client"))
            )
            if not ok:
                raise Invalid(
                    f"{spec.ref}: {where}.{name} needs common_name, and may have hosts "
                    "(a list), server and client (booleans)",
                    details={"fields": [f"{where}.{name}"]},
                )
        out[str(field)] = wanted
    return out


def placeholder_certificates(spec: ModuleSpec) -> dict[str, dict[str, str]]:
    """What labd would issue, as placeholders (for ``labctl modules lint`` without labd)."""
    cert = "-----BEGIN CERTIFICATE-----\nissued by labd at install\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN PRIVATE KEY-----\nissued by labd at install\n-----END PRIVATE KEY-----\n"
    out: dict[str, dict[str, str]] = {}
    for field, wanted in certificate_requests(spec).items():
        out[field] = {"ca_crt": cert}
        for name in wanted:
            out[field] |= {f"{name}_crt": cert, f"{name}_key": key}
    return out
