"""Rendering a module's templates into Kubernetes objects, in a jinja2 sandbox.

What a template can reach is exactly four names: ``values``, ``release`` (``name``,
``namespace``, ``revision``), ``cluster`` (``name``, ``version``) and ``module`` (``name``,
``version``). No globals, a short list of filters, no attribute whose name starts with ``_``
(the sandbox), no method but a few read-only ones, no loader but the module's own templates
(``include``/``import`` of another of its files works; a path on disk does not), and bounded
``*``/``**``/output sizes.

Injection: every ``{{ … }}`` goes through :func:`yaml_scalar`, so a value is always *one* YAML
scalar: plain text that YAML reads back unchanged stays as it is (``{{ release.name }}-cfg``
works), anything else (a newline, ``: ``, ``#``, quotes, braces) is written as a JSON string,
which YAML reads as one quoted scalar. A value cannot start a new key, document or object.
"""

from __future__ import annotations

import base64
import hashlib
import json
import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import jinja2
import jinja2.sandbox
import yaml
from jinja2.exceptions import SecurityError

from lab.errors import Invalid
from lab.model.jsonlike import json_problem
from lab.modules.sources import Module
from lab.modules.spec import satisfies

MAX_OUTPUT = 4 * 1024 * 1024
"""Bytes of rendered YAML a module may produce (all templates together)."""
MAX_SEQUENCE = 100_000
"""Longest string or list a ``*`` may build in a template."""
MAX_DEPTH = 100
"""Levels of nesting in a rendered object (a CRD's schema needs a few dozen)."""
MAX_STEPS = 1_000_000
"""Loop iterations and calls one render may take (a loop with an empty body writes nothing,
so the output cap alone would let it run for hours in its abandoned worker thread)."""
MAX_INT_BITS = 14_000
"""Largest integer a template may compute (Python writes at most 4300 digits anyway)."""
_COUNTED = "lab_counted"
_FORMAT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?")

# Text YAML reads as one plain scalar wherever a template puts it (no space, quote, comment, flow
# or block indicator; an indicator that only matters first is allowed after the first character).
_PLAIN = re.compile(r"[A-Za-z0-9._/$(][A-Za-z0-9._/$()@+=:%~*!&^-]*")

# Kinds that live outside any namespace (the rest get the release's namespace).
CLUSTER_SCOPED = frozenset(
    {
        "APIService",
        "CSIDriver",
        "CSINode",
        "ClusterIssuer",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)

# Apply order by kind: what others refer to first, workloads next, Jobs last (as kubectl users
# expect); kinds not named here go between the config and the workloads.
APPLY_ORDER = (
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Service",
    "",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Job",
    "CronJob",
)


def apply_rank(kind: str) -> int:
    return APPLY_ORDER.index(kind) if kind in APPLY_ORDER else APPLY_ORDER.index("")


_SAFE_METHODS = frozenset(
    {"items", "keys", "values", "get", "lower", "upper", "startswith", "endswith", "strip", "split"}
)
_FILTERS = (
    "default",
    "d",
    "join",
    "lower",
    "upper",
    "trim",
    "int",
    "float",
    "string",
    "length",
    "count",
    "first",
    "last",
    "list",
    "sort",
    "dictsort",
    "items",
    "replace",
    "min",
    "max",
    "unique",
    "reject",
    "select",
    "map",
    "selectattr",
    "rejectattr",
)


def yaml_scalar(value: Any) -> str:
    """How a ``{{ … }}`` is written into YAML: exactly one scalar (or a JSON flow collection)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
            return value
        return json.dumps(value)
    if isinstance(value, (Mapping, list, tuple)):
        _check_size(value)
        return json.dumps(value, sort_keys=True, default=_refuse)
    return str(_refuse(value))


def _check_size(value: Any, limit: int = MAX_OUTPUT) -> None:
    """SecurityError when ``value`` written out would pass ``limit`` characters: a template
    may hold many references to one large string (``[s] * 1000``), cheap until written."""
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, Mapping):
            size += 2 + 2 * len(item)
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            size += 2 + len(item)
            stack += item
        elif isinstance(item, int) and not isinstance(item, bool):
            size += item.bit_length() // 3 + 1
        else:
            size += 8
        if size > limit or len(stack) > limit:
            raise SecurityError("result too large")


def _check_format(template: str, args: Any) -> None:
    """A ``%`` format may not ask for a width or precision past MAX_SEQUENCE (``'%0999999d'``)
    nor take one from its arguments (``'%*d'``)."""
    for width, precision in _FORMAT_SPEC.findall(template):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_SEQUENCE):
                raise SecurityError("result too large: a % format width or precision")
    _check_size(args)


def _refuse(value: Any) -> Any:
    raise SecurityError(f"a template cannot write a {type(value).__name__}")


def _b64encode(value: Any) -> str:
    _check_size(value, MAX_OUTPUT * 3 // 4)
    text = value if isinstance(value, str) else json.dumps(value)
    return base64.b64encode(text.encode()).decode()


def _indent(value: Any, width: int = 2) -> str:
    """A block of text indented by ``width`` spaces after the first line (width at most 32)."""
    width = max(0, min(int(width), 32))
    text = str(value)
    if len(text) + text.count("\n") * width > MAX_OUTPUT:
        raise SecurityError("result too large")
    return text.replace("\n", "\n" + " " * width)


def _string(value: Any) -> str:
    """jinja's ``string``, refused when its result would pass MAX_OUTPUT."""
    _check_size(value)
    return str(value)


def _replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    """jinja's ``replace``, refused when its result would pass MAX_OUTPUT."""
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    if len(text) + hits * (len(new) - len(old)) > MAX_OUTPUT:
        raise SecurityError("result too large")
    return text.replace(old, new, -1 if count is None else count)


@jinja2.pass_environment
def _join(
    env: jinja2.Environment, value: Any, d: Any = "", attribute: str | int | None = None
) -> str:
    """jinja's ``join``, refused when its result would pass MAX_OUTPUT."""
    items = list(value)
    if attribute is not None:
        getter = jinja2.filters.make_attrgetter(env, attribute)
        items = [getter(item) for item in items]
    separator = str(d)
    _check_size(items, MAX_OUTPUT - len(separator) * max(len(items) - 1, 0))
    return separator.join(str(item) for item in items)


@jinja2.pass_environment
def _counted(env: _Sandbox, iterable: Any) -> Any:
    """What every ``{% for %}`` iterates: its items, each one step of the render's budget."""
    for item in iterable:
        env.step()
        yield item


class _CodeGenerator(jinja2.compiler.CodeGenerator):
    """``a ~ b`` through :meth:`_Sandbox.checked_concat`, so a chain of doublings is bounded
    too, and every loop through :func:`_counted`."""

    def visit_Template(
        self, node: jinja2.nodes.Template, frame: jinja2.compiler.Frame | None = None
    ) -> None:
        for loop in node.find_all(jinja2.nodes.For):
            loop.iter = jinja2.nodes.Filter(
                loop.iter, _COUNTED, [], [], None, None, lineno=loop.lineno
            )
        super().visit_Template(node, frame)

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: jinja2.compiler.Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(jinja2.sandbox.SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator
    steps_left = MAX_STEPS

    def step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise SecurityError(f"the templates take more than {MAX_STEPS} loop steps and calls")

    def call(self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self.step()
        return super().call(__context, __obj, *args, **kwargs)

    def checked_concat(self, items: tuple[Any, ...]) -> str:
        _check_size(items)
        text = "".join(str(item) for item in items)
        _check_size(text)
        return text

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format is not on the short list of methods (is_safe_attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return not callable(value) or attr in _SAFE_METHODS

    def call_binop(
        self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any
    ) -> Any:
        ints = isinstance(left, int) and isinstance(right, int)
        if operator_ == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large")
            if ints and left.bit_length() * right > MAX_INT_BITS:
                raise SecurityError("result too large")
            return operator.pow(left, right)
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                if sized and len(seq) * times > MAX_SEQUENCE:
                    raise SecurityError("result too large")
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError("result too large")
            return operator.mul(left, right)
        if operator_ == "%":
            if isinstance(left, str):
                _check_format(left, right)
            return operator.mod(left, right)
        if operator_ == "+":
            sequences = (
                (str, MAX_OUTPUT),
                ((list, tuple), MAX_SEQUENCE),
            )
            for kind, limit in sequences:
                both = isinstance(left, kind) and isinstance(right, kind)
                if both and len(left) + len(right) > limit:
                    raise SecurityError("result too large")
            return operator.add(left, right)
        return super().call_binop(context, operator_, left, right)


def _environment(templates: Mapping[str, str]) -> _Sandbox:
    env = _Sandbox(
        loader=jinja2.DictLoader(dict(templates)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # YAML, not HTML: yaml_scalar is the escaping
        finalize=yaml_scalar,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in _FILTERS}
    env.filters["b64encode"] = _b64encode
    env.filters["indent"] = _indent
    env.filters["replace"] = _replace
    env.filters["join"] = _join
    env.filters["string"] = _string
    env.filters[_COUNTED] = _counted
    return env


@attrs.frozen(kw_only=True)
class Release:
    name: str
    namespace: str
    revision: int


@attrs.frozen(kw_only=True)
class Cluster:
    name: str
    version: str = ""


@attrs.frozen(kw_only=True)
class Rendered:
    """The objects of one render, in apply order, and the manifest they make."""

    objects: tuple[dict[str, Any], ...]
    hooks: Mapping[str, tuple[dict[str, Any], ...]]
    manifest: str
    digest: str

    def object_keys(self) -> list[str]:
        return [object_key(o) for o in self.objects]


def object_key(obj: Mapping[str, Any]) -> str:
    """``apiVersion/Kind/namespace/name`` (namespace empty for cluster-scoped objects)."""
    meta = obj.get("metadata") or {}
    return f"{obj['apiVersion']}/{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"


def manifest_of(objects: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The canonical YAML of ``objects`` and its sha256."""
    text = yaml.safe_dump_all(list(objects), sort_keys=True, default_flow_style=False)
    return text, hashlib.sha256(text.encode()).hexdigest()


def _objects_of(name: str, text: str, release: Release) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise Invalid(
            f"{name}: renders to invalid YAML: {exc}", details={"fields": [name]}
        ) from exc
    except RecursionError:
        raise Invalid(
            f"{name}: the rendered YAML nests deeper than {MAX_DEPTH} levels",
            details={"fields": [name]},
        ) from None
    # Before anything encodes them: aliases could make a small output enormous or circular.
    problem = json_problem(docs, max_size=2 * MAX_OUTPUT, max_depth=MAX_DEPTH)
    if problem is not None:
        raise Invalid(f"{name}: the rendered YAML {problem}", details={"fields": [name]})
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        where = f"{name} (document {index + 1})"
        if not isinstance(doc, dict):
            raise Invalid(f"{where}: not a Kubernetes object", details={"fields": [name]})
        meta = doc.get("metadata")
        if not (
            isinstance(doc.get("apiVersion"), str)
            and isinstance(doc.get("kind"), str)
            and isinstance(meta, dict)
            and isinstance(meta.get("name"), str)
            and meta["name"]
        ):
            raise Invalid(
                f"{where}: needs apiVersion, kind and metadata.name", details={"fields": [name]}
            )
        if doc["kind"] in CLUSTER_SCOPED:
            meta.pop("namespace", None)
        else:
            namespace = meta.setdefault("namespace", release.namespace)
            if namespace != release.namespace:
                raise Invalid(
                    f"{where}: {doc['kind']}/{meta['name']} is in namespace {namespace!r}, "
                    f"the release in {release.namespace!r}",
                    details={"fields": [name]},
                )
        labels = meta.setdefault("labels", {})
        if not isinstance(labels, dict):
            raise Invalid(f"{where}: metadata.labels must be a mapping", details={"fields": [name]})
        labels["app.kubernetes.io/managed-by"] = "labctl"
        labels["app.kubernetes.io/instance"] = release.name
        out.append(doc)
    return out


def render(
    module: Module, values: Mapping[str, Any], *, release: Release, cluster: Cluster
) -> Rendered:
    """Render every template of ``module`` (hooks apart) with checked ``values``.

    Raises Invalid naming the template for an undefined name, a sandbox refusal, YAML that is
    not objects, an object in another namespace, two objects with one key, or a cluster whose
    Kubernetes version the module does not support.
    """
    spec = module.spec
    wanted = spec.requires.get("kubernetes")
    if wanted and cluster.version and not satisfies(cluster.version, wanted):
        raise Invalid(
            f"{spec.ref} requires Kubernetes {wanted}; "
            f"cluster {cluster.name} runs {cluster.version}",
            details={"fields": ["cluster"]},
        )
    env = _environment(module.templates)
    context = {
        "values": values,
        "release": attrs.asdict(release),
        "cluster": attrs.asdict(cluster),
        "module": {"name": spec.name, "version": spec.version},
    }
    hook_names = spec.hook_templates()
    size = 0

    def one(name: str) -> list[dict[str, Any]]:
        nonlocal size
        parts: list[str] = []
        try:
            # Streamed, so a template that writes without end stops at the cap, not at OOM.
            for chunk in env.get_template(name).generate(context):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise Invalid(
                        f"{spec.ref} renders more than {MAX_OUTPUT} bytes",
                        details={"fields": [name]},
                    )
                parts.append(chunk)
        except (
            jinja2.TemplateError,
            ArithmeticError,
            ValueError,
            TypeError,
            LookupError,
            RecursionError,
        ) as exc:
            # A Python error inside a template (1 / 0, int('x')) is the template's fault.
            raise Invalid(
                f"{name}: {type(exc).__name__}: {exc}", details={"fields": [name]}
            ) from exc
        return _objects_of(name, "".join(parts), release)

    objects: list[dict[str, Any]] = []
    for name in sorted(module.templates):
        if name in hook_names or not name.endswith((".yaml", ".yml")):
            continue
        if name.rsplit("/", 1)[-1].startswith("_"):
            continue  # _helpers.yaml and the like: included by others, not objects themselves
        objects += one(name)
    objects.sort(key=lambda o: apply_rank(o["kind"]))
    seen: set[str] = set()
    for obj in objects:
        key = object_key(obj)
        if key in seen:
            raise Invalid(f"{spec.ref}: two objects are {key}", details={"fields": ["templates"]})
        seen.add(key)
    hooks = {
        event: tuple(o for path in paths for o in one(path)) for event, paths in spec.hooks.items()
    }
    manifest, digest = manifest_of(objects)
    return Rendered(objects=tuple(objects), hooks=hooks, manifest=manifest, digest=digest)
