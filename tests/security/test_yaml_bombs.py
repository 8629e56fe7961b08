"""YAML that is small on disk and enormous in memory, or that says one thing twice.

Aliases let a few hundred bytes stand for hundreds of millions of strings (a "billion laughs"):
PyYAML builds them as shared references, cheaply, and the cost comes when the value is written
out in full (the JSON sent to the API server, or to labd). A module's templates are written by
whoever may install an app, so labd must refuse a render that expands past its output cap, a
value that refers to itself, and nesting too deep to encode, before any of it is encoded.
``labctl apply`` refuses the same in its documents, and refuses a key given twice in one
mapping (the second would silently win over the first a reviewer read).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.apply.documents import parse_text
from lab.errors import Invalid
from lab.modules import Cluster, Release, check_values, load_directory, render

MODULE_YAML = "name: probe\nversion: 0.1.0\n"
HEAD = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"


def laughs(indent: str, levels: int = 9) -> str:
    lines = [f'{indent}l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"{indent}l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def rendered(tmp_path: Path, template: str) -> list[object]:
    root = tmp_path / "probe"
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "module.yaml").write_text(MODULE_YAML)
    (root / "templates" / "cm.yaml").write_text(template)
    module = load_directory(root)
    out = render(
        module,
        check_values(module.spec.parameters, {}),
        release=Release(name="web", namespace="apps", revision=1),
        cluster=Cluster(name="c1", version="1.31.0"),
    )
    return list(out.objects)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (HEAD + "  annotations:\n" + laughs("    "), "aliases"),
        (HEAD + "data: &self\n  again: *self\n", "deeper"),
        (HEAD + "data:\n  deep: " + "[" * 3000 + "]" * 3000 + "\n", "deeper"),
    ],
    ids=["billion-laughs", "refers-to-itself", "deep"],
)
def test_a_render_that_would_explode_when_encoded_is_refused(
    tmp_path: Path, template: str, reason: str
) -> None:
    started = time.monotonic()
    with pytest.raises(Invalid, match=reason) as caught:
        rendered(tmp_path, template)
    assert caught.value.details["fields"] == ["templates/cm.yaml"]
    assert time.monotonic() - started < 10


def test_anchors_of_a_reasonable_size_still_render(tmp_path: Path) -> None:
    template = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"
        "  labels: &labels {tier: web, team: core}\n"
        "  annotations:\n    <<: *labels\n    extra: one\n"
    )
    (obj,) = rendered(tmp_path, template)
    assert isinstance(obj, dict)
    assert obj["metadata"]["annotations"] == {"tier": "web", "team": "core", "extra": "one"}


APP = "apiVersion: lab/v1\nkind: App\nmetadata: {name: hello}\nspec:\n  module: hello\n"
APP += "  cluster: home\n  namespace: web\n"


def test_apply_documents_refuse_an_alias_bomb() -> None:
    started = time.monotonic()
    with pytest.raises(Invalid, match="aliases"):
        parse_text(APP + "  values:\n" + laughs("    "), "bomb.yaml")
    assert time.monotonic() - started < 10


def test_apply_documents_refuse_a_key_given_twice() -> None:
    text = (
        "apiVersion: lab/v1\nkind: Role\nmetadata: {name: ops}\nspec:\n"
        "  rules: [{effect: allow, action: 'servers:read', resource: 'server/*'}]\n"
        "  rules: [{effect: allow, action: '*', resource: '*'}]\n"
    )
    with pytest.raises(Invalid, match="rules") as caught:
        parse_text(text, "twice.yaml")
    assert "twice.yaml" in caught.value.message


@pytest.mark.parametrize(
    "tag",
    ["!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGk="],
)
def test_apply_documents_build_no_python_objects(tag: str) -> None:
    with pytest.raises(Invalid):
        parse_text(APP + f"  values: {{x: {tag}}}\n", "tags.yaml")
