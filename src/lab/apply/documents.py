"""``apiVersion: lab/v1`` documents: read from files, checked against ``schema/apply/`` (one
JSON Schema per kind), and turned into labd's declared form (lab.model.declared).

Every error names the file, the document's index in it (from 0, as ``kubectl`` counts) and the
field path as written (``spec.rules[1].effect``), so a bad document is found in a directory of
many files.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from attrs import Factory, frozen

from lab.errors import ConfigError, Invalid
from lab.model.declared import APPLIED_BY_LABD, Declared, ObjectKey
from lab.model.jsonlike import json_problem

API_VERSION = "lab/v1"
KINDS = ("Role", "User", "Server", "ServerLabels", "Machine", "Cluster", "App")
ALIASES = {"ServerLabels": "Server"}
"""Kinds that are another kind's second name; export prints the first."""
ORDER = ("Role", "User", "Server", "Machine", "Cluster", "App")
"""The order an apply makes changes in: labd's own kinds (one transaction), then machines,
clusters and apps through their own operations."""
SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE = 4 * 1024 * 1024


@frozen(kw_only=True)
class Source:
    file: str
    index: int

    def __str__(self) -> str:
        return f"{self.file}: document {self.index}"


@frozen(kw_only=True)
class Document:
    kind: str
    """The canonical kind (``ServerLabels`` is read as ``Server``)."""
    name: str
    labels: dict[str, str] | None = None
    spec: dict[str, Any] = Factory(dict)
    resource_version: str | None = None
    source: Source

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(kind=self.kind, name=self.name)

    @property
    def base_dir(self) -> Path:
        """Where a ``file:`` reference of this document is relative to."""
        return Path.cwd() if self.source.file == "-" else Path(self.source.file).parent


def schema_dir() -> Path:
    """``lab/_data/schema/apply`` in a wheel, else ``schema/apply`` of the checkout."""
    shipped = importlib.resources.files("lab") / "_data" / "schema" / "apply"
    if shipped.is_dir():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[3] / "schema" / "apply"
    if checkout.is_dir():
        return checkout
    raise ConfigError("the apply schemas were not found (neither lab/_data/schema nor schema/)")


@functools.cache
def validator(kind: str) -> jsonschema.protocols.Validator:
    path = schema_dir() / f"{kind.lower()}.schema.json"
    return jsonschema.Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))


def field_path(parts: Iterable[Any]) -> str:
    """``["spec", "rules", 1, "effect"]`` as written: ``spec.rules[1].effect``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: jsonschema.ValidationError) -> tuple[str, str]:
    """The field an error is about and a short message."""
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in instance if k not in known)
        if extra:
            return field_path([*path, extra[0]]), "is not a known field"
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = [k for k in error.validator_value if k not in instance]
        if missing:
            return field_path([*path, missing[0]]), "is required"
    if error.validator == "maxProperties" and error.validator_value == 0:
        return field_path(path), "takes no fields"
    return field_path(path) or "(document)", error.message


def invalid(source: Source, field: str, message: str) -> Invalid:
    return Invalid(
        f"{source}: {field}: {message}",
        details={"file": source.file, "document": source.index, "fields": [field]},
    )


def check_document(raw: Any, source: Source) -> Document:
    """One parsed document, checked against its kind's schema; Invalid naming the field."""
    if not isinstance(raw, dict):
        raise invalid(source, "(document)", "must be a mapping with apiVersion, kind, metadata")
    if raw.get("apiVersion") != API_VERSION:
        raise invalid(source, "apiVersion", f"must be {API_VERSION}")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise invalid(source, "kind", f"must be one of {', '.join(KINDS)}")
    errors = sorted(validator(kind).iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        field, message = _problem(errors[0])
        raise invalid(source, field, message)
    meta = raw["metadata"]
    return Document(
        kind=ALIASES.get(kind, kind),
        name=meta["name"],
        labels=dict(meta["labels"]) if "labels" in meta else None,
        spec=dict(raw.get("spec") or {}),
        resource_version=meta.get("resourceVersion"),
        source=source,
    )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last,
    silently overriding the one a reader saw first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping refuses it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


MAX_DEPTH = 64
"""Levels of nesting in one document (labd accepts at most 32 in a request)."""


def parse_text(text: str, file: str) -> list[Document]:
    """Every document of a (multi-document) YAML or JSON text; empty documents are skipped.
    A key given twice, aliases that expand past :data:`MAX_FILE`, nesting deeper than
    :data:`MAX_DEPTH` and values JSON has not (``!!binary``, an unquoted date) are refused."""
    try:
        raws = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise Invalid(
            f"{file}: not YAML{where}: {getattr(exc, 'problem', None) or exc}",
            details={"file": file},
        ) from exc
    except RecursionError:
        raise Invalid(
            f"{file}: nests deeper than {MAX_DEPTH} levels", details={"file": file}
        ) from None
    docs = []
    for i, raw in enumerate(raws):
        if raw is None:
            continue
        source = Source(file=file, index=i)
        problem = json_problem(raw, max_size=2 * MAX_FILE, max_depth=MAX_DEPTH)
        if problem is not None:
            raise invalid(source, "(document)", problem)
        docs.append(check_document(raw, source))
    return docs


def files_of(path: Path, *, recursive: bool) -> list[Path]:
    if path.is_dir():
        found = path.rglob("*") if recursive else path.iterdir()
        return sorted(p for p in found if p.is_file() and p.suffix in SUFFIXES)
    if path.is_file():
        return [path]
    raise Invalid(f"{path}: no such file or directory", details={"file": str(path)})


def read_documents(paths: Sequence[str], *, recursive: bool = False) -> list[Document]:
    """The documents of ``paths`` (files, directories, or ``-`` for standard input), in order;
    Invalid for a bad document or an object declared twice."""
    docs: list[Document] = []
    for given in paths:
        if given == "-":
            docs += parse_text(sys.stdin.read(), "-")
            continue
        for file in files_of(Path(given), recursive=recursive):
            if file.stat().st_size > MAX_FILE:
                raise Invalid(f"{file}: larger than {MAX_FILE} bytes", details={"file": str(file)})
            docs += parse_text(file.read_text(encoding="utf-8"), str(file))
    seen: dict[ObjectKey, Source] = {}
    for doc in docs:
        first = seen.setdefault(doc.key, doc.source)
        if first is not doc.source:
            raise invalid(doc.source, "metadata.name", f"{doc.key} is also declared in {first}")
    return sorted(docs, key=lambda d: ORDER.index(d.kind))


def declared(doc: Document) -> Declared:
    """A labd-side document in canonical form (defaults filled in, sets sorted)."""
    if doc.kind == "Role":
        rules = [dict(r) for r in doc.spec.get("rules", [])]
        groups = list(dict.fromkeys(doc.spec.get("kubernetes_groups", [])))
        spec: dict[str, Any] = {
            "description": doc.spec.get("description", ""),
            "rules": rules,
            "kubernetes_groups": groups,
        }
        return Declared(kind="Role", name=doc.name, spec=spec)
    if doc.kind == "User":
        spec = {
            "roles": sorted(set(doc.spec.get("roles", []))),
            "disabled": bool(doc.spec.get("disabled", False)),
        }
        return Declared(kind="User", name=doc.name, spec=spec)
    if doc.kind == "Server":
        return Declared(kind="Server", name=doc.name, labels=dict(doc.labels or {}))
    raise ValueError(f"{doc.kind} is not applied by labd")


def from_document(raw: Mapping[str, Any]) -> Declared:
    """An exported document (labd's answer) back in declared form."""
    return declared(check_document(dict(raw), Source(file="labd", index=0)))


def is_labd_kind(kind: str) -> bool:
    return kind in APPLIED_BY_LABD


def document_of(obj: Declared, *, version: bool = True) -> dict[str, Any]:
    """``obj`` as a document ``apply`` accepts unchanged (export: ``labctl get -o yaml``)."""
    meta: dict[str, Any] = {"name": obj.name}
    if obj.kind == "Server":
        meta["labels"] = dict(sorted(obj.labels.items()))
    if version:
        meta["resourceVersion"] = obj.version
    out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": obj.kind, "metadata": meta}
    if obj.kind != "Server":
        out["spec"] = obj.spec
    return out


def cluster_document(item: Mapping[str, Any]) -> dict[str, Any]:
    """A cluster of ``GET /api/clusters`` as a Cluster document: applied to the cluster it
    came from it changes nothing (labd keeps the kubeconfig; the document never holds it)."""
    spec = {"api_server": item["api_server"]} if item.get("api_server") else {}
    return {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": item["name"]},
        "spec": spec,
    }


def dump_documents(docs: Iterable[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(
        [dict(d) for d in docs], sort_keys=False, default_flow_style=False, explicit_start=True
    )


def resolve_ref(ref: Mapping[str, str], base: Path, where: str, source: Source) -> str:
    """The value a ``{file: PATH}`` or ``{env: NAME}`` reference points at, read here (on the
    client), so it never sits in the files kept in git."""
    if "env" in ref:
        value = os.environ.get(ref["env"])
        if value is None:
            raise invalid(source, where, f"environment variable {ref['env']} is not set")
        return value
    given = Path(ref["file"]).expanduser()
    path = given if given.is_absolute() else base / given
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise invalid(source, where, f"cannot read {path}: {exc.strerror or exc}") from exc


def iter_labd(docs: Iterable[Document]) -> Iterator[Document]:
    return (d for d in docs if is_labd_kind(d.kind))
