"""Module templates are code written by whoever may install an app: what can they reach?

Only ``values``, ``release``, ``cluster`` and ``module``: not a file (outside the module's own
templates), not the environment, not Python attributes; and a *value* with YAML or Jinja syntax
stays one scalar: it cannot add a key, an object or a template of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.errors import Invalid
from lab.modules import Cluster, Release, check_values, from_archive, load_directory, render

MODULE_YAML = """\
name: probe
version: 0.1.0
parameters:
  type: object
  properties:
    text: {type: string, default: plain}
    password: {type: string, secret: true, default: s3cret-value}
"""


def module_with(tmp_path: Path, template: str, name: str = "cm.yaml") -> Path:
    root = tmp_path / "probe"
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "module.yaml").write_text(MODULE_YAML)
    (root / "templates" / name).write_text(template)
    return root


def rendered(root: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    module = load_directory(root)
    checked = check_values(module.spec.parameters, values or {})
    out = render(
        module,
        checked,
        release=Release(name="web", namespace="apps", revision=1),
        cluster=Cluster(name="c1", version="1.31.0"),
    )
    return list(out.objects)


def configmap(body: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n{body}"


@pytest.mark.parametrize(
    "expression",
    [
        "{% include '/etc/passwd' %}",
        "{% include '../../../../etc/passwd' %}",
        "{% import '/etc/hostname' as h %}",
        "{{ values.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ values.items.__globals__ }}",
        "{{ release.__init__ }}",
        "{{ lipsum.__globals__.os.environ }}",
        "{{ cycler.__init__.__globals__.os.environ }}",
        "{{ self._TemplateReference__context }}",
        "{{ config }}",
        "{{ range(10) }}",
        "{{ environ }}",
        "{{ ''.format }}",
        "{{ 'x' * 100000000 }}",
        "{{ 10 ** 100000 }}",
        "{{ values | attr('__class__') }}",
        "{{ values.text | center(1000000000) }}",
    ],
)
def test_a_template_cannot_reach_files_env_or_attributes(tmp_path: Path, expression: str) -> None:
    root = module_with(tmp_path, configmap(f"  out: {expression}\n"))
    with pytest.raises(Invalid) as caught:
        rendered(root)
    assert "cm.yaml" in caught.value.message


def test_a_template_sees_exactly_four_names(tmp_path: Path) -> None:
    template = configmap(
        "  release: {{ release.name }}/{{ release.namespace }}/{{ release.revision }}\n"
        "  cluster: {{ cluster.name }}/{{ cluster.version }}\n"
        "  module: {{ module.name }}@{{ module.version }}\n"
        "  text: {{ values.text }}\n"
    )
    (cm,) = rendered(module_with(tmp_path, template))
    assert cm["data"] == {
        "release": "web/apps/1",
        "cluster": "c1/1.31.0",
        "module": "probe@0.1.0",
        "text": "plain",
    }
    # (jinja2 always defines `self`, the template's blocks; its insides are refused above.)
    for other in ("os", "namespace", "joiner", "dict", "lab", "env"):
        root = module_with(tmp_path, configmap(f"  x: {{{{ {other} is defined }}}}\n"))
        (cm,) = rendered(root)
        assert cm["data"]["x"] is False, other


def test_include_of_the_modules_own_template_works(tmp_path: Path) -> None:
    root = module_with(tmp_path, configmap("  a: {% include 'templates/_part.yaml' %}\n"))
    (root / "templates" / "_part.yaml").write_text("{{ values.text }}")
    (cm,) = rendered(root)
    assert cm["data"] == {"a": "plain"}


@pytest.mark.parametrize(
    "value",
    [
        "x\nkind: Secret",
        "x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}",
        "a: b",
        "x # comment",
        "{{ release.name }}",
        "{% raw %}",
        '"quoted", extra: 1',
        "[1, 2]",
        "{a: 1}",
        "- item",
        "&anchor x",
        "*alias",
        "!!python/object:os.system ls",
        "yes",
        "123",
        "",
        "|\n  block",
        "x'\"\\",
    ],
)
def test_a_value_with_yaml_or_jinja_syntax_stays_one_string(tmp_path: Path, value: str) -> None:
    for body in ("  text: {{ values.text }}\n", "  text: pre-{{ values.text }}\n"):
        root = module_with(tmp_path, configmap(body + "  other: fixed\n"))
        try:
            objects = rendered(root, {"text": value})
        except Invalid as exc:
            # A value in the middle of a plain scalar may make the YAML invalid: refused, fine.
            assert "invalid YAML" in exc.message
            continue
        assert len(objects) == 1
        (cm,) = objects
        assert set(cm["data"]) == {"text", "other"}
        assert cm["data"]["other"] == "fixed"
        if body.startswith("  text: {{"):
            assert cm["data"]["text"] == value


def test_values_in_flow_context_cannot_add_items(tmp_path: Path) -> None:
    root = module_with(
        tmp_path, configmap("  list: {{ [values.text] }}\n  x: [{{ values.text }}]\n")
    )
    (cm,) = rendered(root, {"text": "a, b"})
    assert cm["data"]["list"] == ["a, b"]
    assert cm["data"]["x"] == ["a, b"]


def test_a_symlink_in_a_module_is_refused(tmp_path: Path) -> None:
    root = module_with(tmp_path, configmap("  a: b\n"))
    (root / "templates" / "leak.yaml").symlink_to("/etc/hostname")
    with pytest.raises(Invalid, match="symbolic link"):
        load_directory(root)


def test_an_archive_cannot_write_or_name_paths_outside(tmp_path: Path) -> None:
    import hashlib
    import io
    import tarfile

    def archive(members: list[tarfile.TarInfo]) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for info in members:
                data = MODULE_YAML.encode() if info.isfile() else b""
                if info.isfile():
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return raw.getvalue()

    link = tarfile.TarInfo("probe/templates/x.yaml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases = {
        "absolute": [tarfile.TarInfo("/etc/module.yaml")],
        "dotdot": [tarfile.TarInfo("probe/../../module.yaml")],
        "symlink": [tarfile.TarInfo("probe/module.yaml"), link],
    }
    for name, members in cases.items():
        data = archive(members)
        with pytest.raises(Invalid, match="not a plain file"):
            from_archive(data, hashlib.sha256(data).hexdigest(), source=name)


def test_endless_output_stops_at_the_cap(tmp_path: Path) -> None:
    loop = "{% for i in 'x' * 90000 %}{% for j in 'y' * 90000 %}0123456789{% endfor %}{% endfor %}"
    root = module_with(tmp_path, configmap(f"  out: {loop}\n"))
    with pytest.raises(Invalid, match="renders more than"):
        rendered(root)
