"""Reading apply documents: errors name the file, the document's index and the field as
written; directories, -R and standard input; secret references; the declared form."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lab.apply.diffs import unified
from lab.apply.documents import declared, read_documents, resolve_ref
from lab.cli.main import stdin_files
from lab.errors import Invalid
from lab.model.declared import Declared

ROLE = "apiVersion: lab/v1\nkind: Role\nmetadata: {name: ops}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            ROLE + "spec:\n  rules:\n  - {effect: allow, action: a, resource: b}\n"
            "  - {effect: alow, action: a, resource: b}\n",
            "spec.rules[1].effect: 'alow' is not one of ['allow', 'deny']",
        ),
        (ROLE + "spec: {rulez: []}\n", "spec.rulez: is not a known field"),
        (ROLE.replace("{name: ops}", "{}"), "metadata.name: is required"),
        (ROLE.replace("lab/v1", "v1"), "apiVersion: must be lab/v1"),
        (ROLE.replace("Role", "Pod"), "kind: must be one of Role, User"),
        (
            "apiVersion: lab/v1\nkind: User\nmetadata: {name: a, labels: {x: y}}\n",
            "metadata.labels: is not a known field",
        ),
        (
            "apiVersion: lab/v1\nkind: Cluster\nmetadata: {name: c}\n"
            "spec: {kubeconfig: 'apiVersion: v1'}\n",
            "spec.kubeconfig: 'apiVersion: v1' is not of type 'object'",
        ),
    ],
)
def test_errors_name_file_document_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("# first document is fine\n" + ROLE.replace("ops", "first") + "---\n" + text)
    with pytest.raises(Invalid) as caught:
        read_documents([str(path)])
    assert caught.value.message.startswith(f"{path}: document 1: {message}")
    assert caught.value.details["document"] == 1


def test_directories_recursion_stdin_and_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(ROLE)
    (tmp_path / "sub" / "b.yml").write_text(ROLE.replace("ops", "dev"))
    (tmp_path / "notes.txt").write_text("not a document")
    assert [d.name for d in read_documents([str(tmp_path)])] == ["ops"]
    assert [d.name for d in read_documents([str(tmp_path)], recursive=True)] == ["ops", "dev"]
    monkeypatch.setattr("sys.stdin", io.StringIO(ROLE.replace("ops", "piped")))
    assert [d.name for d in read_documents(["-"])] == ["piped"]
    (tmp_path / "sub" / "c.yaml").write_text(ROLE)
    with pytest.raises(Invalid, match="role/ops is also declared in"):
        read_documents([str(tmp_path)], recursive=True)
    assert stdin_files(["apply", "-f", "-", "--set", "x"]) == ["apply", "-f=-", "--set", "x"]
    assert stdin_files(["logs", "-f", "-"]) == ["logs", "-f", "-"]


def test_references_are_read_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kc").write_text("kubeconfig text")
    path = tmp_path / "c.yaml"
    path.write_text("apiVersion: lab/v1\nkind: Cluster\nmetadata: {name: c}\n")
    (cluster,) = read_documents([str(path)])
    assert resolve_ref({"file": "kc"}, tmp_path, "spec.kubeconfig", cluster.source) == (
        "kubeconfig text"
    )
    monkeypatch.setenv("KC", "from env")
    assert resolve_ref({"env": "KC"}, tmp_path, "x", cluster.source) == "from env"
    monkeypatch.delenv("KC")
    with pytest.raises(Invalid, match="environment variable KC is not set"):
        resolve_ref({"env": "KC"}, tmp_path, "x", cluster.source)


def test_declared_form_and_diff(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(
        "apiVersion: lab/v1\nkind: User\nmetadata: {name: ann}\nspec: {roles: [b, a]}\n"
    )
    (doc,) = read_documents([str(path)])
    ann = declared(doc)
    assert ann.spec == {"roles": ["a", "b"], "disabled": False}
    disabled = Declared(kind="User", name="ann", spec={**ann.spec, "disabled": True})
    text = unified(ann, disabled, "user/ann")
    assert "-  disabled: false\n+  disabled: true\n" in text
    assert unified(ann, ann, "user/ann") == ""
    assert ann.version != disabled.version and ann.version == declared(doc).version
