"""Apply documents at their edges: field paths as written, which error of many is named, the
canonical declared form, export and its round trip, YAML's traps (duplicate keys, dates,
aliases, nesting), the file size cap, and the order an apply runs in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apply.diffs import unified
from lab.apply.documents import (
    MAX_FILE,
    Source,
    check_document,
    cluster_document,
    declared,
    document_of,
    dump_documents,
    field_path,
    from_document,
    is_labd_kind,
    iter_labd,
    parse_text,
    read_documents,
    resolve_ref,
)
from lab.errors import Invalid
from lab.model.declared import Declared

SRC = Source(file="f.yaml", index=3)
KINDS = "must be one of Role, User, Server, ServerLabels, Machine, Cluster, App"


def doc(kind: str, name: str = "x", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "lab/v1", "kind": kind, "metadata": {"name": name}, **extra}


def refusal(raw: Any) -> tuple[str, dict[str, Any]]:
    with pytest.raises(Invalid) as caught:
        check_document(raw, SRC)
    return str(caught.value), caught.value.details


def test_field_paths_as_written() -> None:
    assert field_path(["spec", "rules", 1, "effect"]) == "spec.rules[1].effect"
    assert field_path([0, "a"]) == "[0].a"
    assert field_path(["a", 0, 1]) == "a[0][1]"
    assert field_path([]) == ""


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ("text", "(document)", "must be a mapping with apiVersion, kind, metadata"),
        ({"kind": "Role"}, "apiVersion", "must be lab/v1"),
        (doc("role"), "kind", KINDS),
        ({**doc("Role"), "kind": 5}, "kind", KINDS),
        ({"apiVersion": "lab/v1", "kind": "Role"}, "metadata", "is required"),
        (doc("Role", extra=1), "extra", "is not a known field"),
        (
            doc("Role", spec={"rules": [{"effect": "allow", "action": "a"}]}),
            "spec.rules[0].resource",
            "is required",
        ),
        (doc("Role", spec={"rules": "x"}), "spec.rules", "'x' is not of type 'array'"),
        (doc("User", spec={"roles": [1]}), "spec.roles[0]", "1 is not of type 'string'"),
    ],
)
def test_each_refusal_names_source_field_and_rule(raw: Any, field: str, message: str) -> None:
    text, details = refusal(raw)
    assert text == f"f.yaml: document 3: {field}: {message}"
    assert details == {"file": "f.yaml", "document": 3, "fields": [field]}


def test_the_first_error_by_path_is_named() -> None:
    raw = doc("Role", spec={"rules": [{"effect": "x", "action": "a", "resource": "r"}]})
    raw["metadata"]["bad"] = 1
    _, details = refusal(raw)
    assert details["fields"] == ["metadata.bad"]


def test_a_document_read_with_its_labels_version_and_alias() -> None:
    read = check_document(
        {
            "apiVersion": "lab/v1",
            "kind": "ServerLabels",
            "metadata": {"name": "s1", "labels": {"zone": "a"}, "resourceVersion": "0" * 16},
        },
        SRC,
    )
    assert (read.kind, read.name, read.labels, read.spec) == ("Server", "s1", {"zone": "a"}, {})
    assert read.resource_version == "0" * 16 and read.source == SRC
    assert str(read.key) == "server/s1"
    assert str(SRC) == "f.yaml: document 3"
    role = check_document(doc("Role", spec={"description": "d"}), SRC)
    assert (role.labels, role.resource_version, role.spec) == (None, None, {"description": "d"})
    assert role.base_dir == Path("f.yaml").parent
    assert check_document(doc("Role"), Source(file="-", index=0)).base_dir == Path.cwd()


def test_the_declared_form_is_canonical() -> None:
    role = declared(check_document(doc("Role", spec={"kubernetes_groups": ["b", "a", "b"]}), SRC))
    assert role == Declared(
        kind="Role",
        name="x",
        spec={"description": "", "rules": [], "kubernetes_groups": ["b", "a"]},
    )
    rules = [
        {"effect": "deny", "action": "b", "resource": "r"},
        {"effect": "allow", "action": "a", "resource": "r"},
    ]
    assert declared(check_document(doc("Role", spec={"rules": rules}), SRC)).spec["rules"] == rules
    user = declared(check_document(doc("User", spec={"roles": ["b", "a"], "disabled": True}), SRC))
    assert user.spec == {"roles": ["a", "b"], "disabled": True}
    assert declared(check_document(doc("User"), SRC)).spec == {"roles": [], "disabled": False}
    server = declared(check_document(doc("Server"), SRC))
    assert server == Declared(kind="Server", name="x", labels={}, spec={})
    with pytest.raises(ValueError, match="Machine is not applied by labd"):
        declared(check_document(doc("Machine", spec={"mac": "52:54:00:ab:cd:ef"}), SRC))
    assert [is_labd_kind(k) for k in ("Role", "User", "Server", "Machine", "App")] == [
        True, True, True, False, False
    ]  # fmt: skip


def test_export_round_trips_and_carries_the_version_when_asked() -> None:
    server = Declared(kind="Server", name="s1", labels={"b": "2", "a": "1"})
    out = document_of(server)
    assert out == {
        "apiVersion": "lab/v1",
        "kind": "Server",
        "metadata": {
            "name": "s1",
            "labels": {"a": "1", "b": "2"},
            "resourceVersion": server.version,
        },
    }
    assert list(out["metadata"]["labels"]) == ["a", "b"]
    user = Declared(kind="User", name="ann", spec={"roles": ["a"], "disabled": False})
    assert document_of(user, version=False) == {
        "apiVersion": "lab/v1",
        "kind": "User",
        "metadata": {"name": "ann"},
        "spec": {"roles": ["a"], "disabled": False},
    }
    for obj in (server, user):
        assert from_document(document_of(obj)) == obj
    text = dump_documents([document_of(user, version=False), document_of(server)])
    assert text.startswith("---\napiVersion: lab/v1\nkind: User\n")
    assert [d.name for d in parse_text(text, "x")] == ["ann", "s1"]


def test_a_cluster_exports_without_credentials() -> None:
    item = {"name": "home", "api_server": "https://k:6443", "kubeconfig": "secret"}
    assert cluster_document(item) == {
        "apiVersion": "lab/v1",
        "kind": "Cluster",
        "metadata": {"name": "home"},
        "spec": {"api_server": "https://k:6443"},
    }
    assert cluster_document({"name": "c", "api_server": ""})["spec"] == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("apiVersion: lab/v1\napiVersion: lab/v1\n", "found the key 'apiVersion' twice"),
        ("a: [\n", "not YAML (line 2)"),
        (
            "apiVersion: lab/v1\nb: &x [1]\nc: *x\n<<: {d: 1}\nkind: K\n",
            "document 0: kind: must be",
        ),
        (
            "apiVersion: lab/v1\nkind: Role\nmetadata: {name: 2026-01-01}\n",
            "document 0: (document)",
        ),
        ("[" * 70 + "]" * 70, "document 0: (document)"),
    ],
)
def test_yaml_traps_are_refused(text: str, problem: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_text(text, "t.yaml")
    assert str(caught.value).startswith("t.yaml: ") and problem in str(caught.value)


def test_empty_documents_are_skipped_and_indexes_kept() -> None:
    text = (
        "---\n---\n" + yaml.safe_dump(doc("Role", "a")) + "---\n" + yaml.safe_dump(doc("User", "b"))
    )
    docs = parse_text(text, "t.yaml")
    assert [(d.name, d.source.index) for d in docs] == [("a", 1), ("b", 2)]


def test_files_too_large_or_missing_and_the_apply_order(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("#" * (MAX_FILE + 1))
    with pytest.raises(Invalid, match=f"big.yaml: larger than {MAX_FILE} bytes"):
        read_documents([str(big)])
    exact = tmp_path / "exact.yaml"
    exact.write_text("#" * MAX_FILE)
    assert read_documents([str(exact)]) == []
    with pytest.raises(Invalid, match="no such file or directory") as caught:
        read_documents([str(tmp_path / "gone")])
    assert caught.value.details == {"file": str(tmp_path / "gone")}
    mixed = tmp_path / "mixed.json"
    kinds = ["App", "Cluster", "Machine", "Server", "User", "Role"]
    specs: dict[str, dict[str, Any]] = {
        "App": {"cluster": "c", "module": "m"},
        "Machine": {"mac": "52:54:00:ab:cd:ef"},
    }
    mixed.write_text("\n".join(
        "---\n" + yaml.safe_dump(doc(k, spec=specs[k]) if k in specs else doc(k)) for k in kinds
    ))  # fmt: skip
    assert [d.kind for d in read_documents([str(mixed)])] == list(reversed(kinds))


def test_a_file_reference_is_relative_to_the_document(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "v").write_text("value")
    assert resolve_ref({"file": "sub/v"}, tmp_path, "spec.x", SRC) == "value"
    assert resolve_ref({"file": str(tmp_path / "sub" / "v")}, Path("/nowhere"), "x", SRC) == "value"


def test_a_server_document_takes_no_spec_fields() -> None:
    text, details = refusal(doc("Server", spec={"x": 1}))
    assert details["fields"] == ["spec.x"] and text.endswith("spec.x: is not a known field")
    assert check_document(doc("Server", spec={}), SRC).spec == {}


def test_unified_diffs_of_each_kind() -> None:
    before = Declared(kind="User", name="ann", spec={"roles": ["a"], "disabled": False})
    after = Declared(kind="User", name="ann", spec={"roles": ["a"], "disabled": True})
    assert unified(before, after, "user/ann") == (
        "--- a/user/ann\n+++ b/user/ann\n@@ -1,6 +1,6 @@\n kind: User\n name: ann\n"
        " spec:\n-  disabled: false\n+  disabled: true\n   roles:\n   - a\n"
    )
    created = unified(None, after, "user/ann")
    assert created.startswith("--- /dev/null\n+++ b/user/ann\n@@ -0,0 +1,6 @@\n+kind: User\n")
    removed = unified(before, None, "user/ann")
    assert removed.startswith("--- a/user/ann\n+++ /dev/null\n")
    assert unified(None, None, "x") == ""
    s1 = Declared(kind="Server", name="s1", labels={"zone": "a"}, spec={"ignored": 1})
    s2 = Declared(kind="Server", name="s1", labels={"zone": "b"}, spec={"ignored": 2})
    assert unified(s1, s2, "server/s1") == (
        "--- a/server/s1\n+++ b/server/s1\n@@ -1,5 +1,5 @@\n kind: Server\n metadata:\n"
        "   labels:\n-    zone: a\n+    zone: b\n name: s1\n"
    )
    labelled = Declared(kind="Role", name="r", labels={"x": "y"}, spec={"rules": []})
    assert "labels" not in unified(None, labelled, "role/r")
    assert "metadata" not in unified(None, labelled, "role/r")


def test_exported_documents_dump_as_block_yaml() -> None:
    user = Declared(kind="User", name="ann", spec={"roles": ["a"], "disabled": False})
    text = dump_documents([document_of(user, version=False)])
    assert text == (
        "---\napiVersion: lab/v1\nkind: User\nmetadata:\n  name: ann\n"
        "spec:\n  roles:\n  - a\n  disabled: false\n"
    )


def test_a_bad_export_names_labd_as_its_source() -> None:
    with pytest.raises(Invalid) as caught:
        from_document({"apiVersion": "lab/v1", "kind": "User", "metadata": {"name": "a"}, "x": 1})
    assert str(caught.value) == "labd: document 0: x: is not a known field"
    assert caught.value.details == {"file": "labd", "document": 0, "fields": ["x"]}


def test_only_labd_kinds_are_iterated() -> None:
    docs = parse_text(
        yaml.safe_dump_all(
            [doc("Role", "r"), doc("Machine", "m", spec={"mac": "52:54:00:00:00:01"})]
        ),
        "t",
    )
    assert [d.kind for d in iter_labd(docs)] == ["Role"]


def test_a_reference_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(Invalid) as caught:
        resolve_ref({"file": "gone"}, tmp_path, "spec.kubeconfig", SRC)
    assert str(caught.value) == (
        f"f.yaml: document 3: spec.kubeconfig: cannot read {tmp_path / 'gone'}:"
        " No such file or directory"
    )
    assert caught.value.details["fields"] == ["spec.kubeconfig"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: [\n",
            "t.yaml: not YAML (line 2): expected the node content, but found '<stream end>'",
        ),
        ("a: \x00\n", "t.yaml: not YAML: unacceptable character #x0000: special characters"),
        ("[" * 3000 + "]" * 3000, "t.yaml: nests deeper than 64 levels"),
        (
            "apiVersion: lab/v1\nkind: Role\nmetadata: {name: 2026-01-01}\n",
            "t.yaml: document 0: (document): holds a date, which JSON has not (quote it)",
        ),
    ],
)
def test_unreadable_texts_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_text(text, "t.yaml")
    assert str(caught.value).startswith(message)
    assert caught.value.details["file"] == "t.yaml"


def test_a_mapping_where_a_list_belongs_is_named_at_its_field() -> None:
    text, details = refusal(doc("Role", spec={"rules": {"a": 1}}))
    assert text == "f.yaml: document 3: spec.rules: {'a': 1} is not of type 'array'"
    assert details["fields"] == ["spec.rules"]


def test_a_role_keeps_its_description() -> None:
    role = declared(check_document(doc("Role", spec={"description": "d"}), SRC))
    assert role.spec["description"] == "d"


def test_standard_input_then_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    path = tmp_path / "u.yaml"
    path.write_text(yaml.safe_dump(doc("User", "file")))
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(doc("User", "piped"))))
    docs = read_documents(["-", str(path)])
    assert [(d.name, d.source.file) for d in docs] == [("piped", "-"), ("file", str(path))]
    big = tmp_path / "big.yaml"
    big.write_text("#" * (MAX_FILE + 1))
    with pytest.raises(Invalid) as caught:
        read_documents([str(big)])
    assert caught.value.details == {"file": str(big)}
