"""Kubeconfig parsing at its edges: each refusal's field and reason, which source wins when a
file names two, empty values, contexts without a user, and what dump writes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.errors import Invalid
from lab.kube import (
    KubeConnection,
    context_names,
    dump_kubeconfig,
    flatten_kubeconfig,
    load_kubeconfig,
)
from tests.kube.test_kubeconfig import CA_PEM, CERT_PEM, KEY_PEM, b64

UNSUPPORTED = "not supported; use a token or a client cert"


def doc(
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "clusters": [{"name": "k", "cluster": {"server": "https://k:6443"} | (cluster or {})}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "t0k"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"} | (context or {})}],
        "current-context": "c",
    }


def load(d: dict[str, Any], context: str | None = None, **kw: Any) -> KubeConnection:
    return load_kubeconfig(yaml.safe_dump(d), context, **kw)


def refused(d: dict[str, Any] | str, **kw: Any) -> tuple[list[str], str]:
    source = d if isinstance(d, str) else yaml.safe_dump(d)
    with pytest.raises(Invalid) as exc:
        load_kubeconfig(source, **kw)
    return list(exc.value.details["fields"]), str(exc.value)


@pytest.mark.parametrize(
    ("source", "reason"),
    [("key: [unclosed", "not YAML (ParserError)"), ("7", "not a mapping")],
)
def test_what_is_not_a_kubeconfig_says_so(source: str, reason: str) -> None:
    fields, message = refused(source)
    assert fields == ["kubeconfig"] and message == f"kubeconfig: kubeconfig: {reason}"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"clusters": None}, "clusters", "no entry named 'k'"),
        ({"clusters": {"k": {}}}, "clusters", "not a list"),
        ({"clusters": [{"name": "a", "cluster": {}}, "k"]}, "clusters[1].name", "missing"),
        ({"clusters": [{"name": 7}]}, "clusters[0].name", "missing"),
        ({"clusters": [{"name": "k"}]}, "clusters[k].cluster.server", "must be an http(s):// URL"),
        (
            {"clusters": [{"name": "k", "cluster": None}]},
            "clusters[k].cluster.server",
            "must be an http(s):// URL",
        ),
        ({"clusters": [{"name": "k", "cluster": "x"}]}, "clusters[k].cluster", "not a mapping"),
        ({"current-context": 5}, "current-context", "not set; name a context"),
        ({"current-context": None}, "current-context", "not set; name a context"),
        ({"contexts": [{"name": "c"}]}, "contexts[c].context.cluster", "missing"),
    ],
)
def test_structure_refusals(change: dict[str, Any], field: str, reason: str) -> None:
    fields, message = refused(doc() | change)
    assert fields == [field]
    assert message == f"kubeconfig: {field}: {reason}"


@pytest.mark.parametrize(
    ("cluster", "user", "context", "field", "reason"),
    [
        (
            {"server": "ftp://k"},
            None,
            None,
            "clusters[k].cluster.server",
            "must be an http(s):// URL",
        ),
        ({"server": ""}, None, None, "clusters[k].cluster.server", "must be an http(s):// URL"),
        ({"server": 6443}, None, None, "clusters[k].cluster.server", "not a string"),
        (
            {"insecure-skip-tls-verify": 1},
            None,
            None,
            "clusters[k].cluster.insecure-skip-tls-verify",
            "not a boolean",
        ),
        (
            {"certificate-authority-data": "Y W J j"},
            None,
            None,
            "clusters[k].cluster.certificate-authority-data",
            "not base64",
        ),
        (
            {"certificate-authority-data": "\xe9t\xe9"},
            None,
            None,
            "clusters[k].cluster.certificate-authority-data",
            "not base64",
        ),
        (
            {"certificate-authority-data": b64(b"-----BEGIN")},
            None,
            None,
            "clusters[k].cluster.certificate-authority-data",
            "not a PEM document",
        ),
        (None, {"username": "a"}, None, "users[u].user.username", UNSUPPORTED),
        (None, {"password": "p"}, None, "users[u].user.password", UNSUPPORTED),
        (None, {"auth-provider": {"name": "x"}}, None, "users[u].user.auth-provider", UNSUPPORTED),
        (None, {"exec": {"command": "x"}}, None, "users[u].user.exec", UNSUPPORTED),
        (
            None,
            {"client-key-data": b64(KEY_PEM)},
            None,
            "users[u].user.client-certificate-data",
            "a client certificate needs its key",
        ),
        (
            None,
            {"client-certificate-data": b64(CERT_PEM)},
            None,
            "users[u].user.client-key-data",
            "a client certificate needs its key",
        ),
        (
            None,
            {"tokenFile": "t"},
            None,
            "users[u].user.tokenFile",
            "names a file; labd needs the token inline",
        ),
        (None, {"tokenFile": 5}, None, "users[u].user.tokenFile", "not a string"),
        (None, {"client-key-data": 5}, None, "users[u].user.client-key-data", "not a string"),
        (
            {"certificate-authority": 5},
            None,
            None,
            "clusters[k].cluster.certificate-authority",
            "not a string",
        ),
        (None, None, {"cluster": 5}, "contexts[c].context.cluster", "not a string"),
        (
            None,
            {"client-key": "k"},
            None,
            "users[u].user.client-key",
            "names a file; labd needs the data inline",
        ),
        (None, None, {"namespace": 3}, "contexts[c].context.namespace", "not a string"),
        (None, None, {"user": 3}, "contexts[c].context.user", "not a string"),
    ],
)
def test_field_refusals(
    cluster: dict[str, Any] | None,
    user: dict[str, Any] | None,
    context: dict[str, Any] | None,
    field: str,
    reason: str,
) -> None:
    fields, message = refused(doc(cluster, user, context))
    assert fields == [field]
    assert message == f"kubeconfig: {field}: {reason}"


def test_an_empty_auth_field_is_no_auth_field() -> None:
    conn = load(doc(user={"username": "", "password": None, "token": "t"}))
    assert conn.token == "t"


def test_a_named_context_wins_over_the_current_one() -> None:
    d = doc()
    d["contexts"].append({"name": "other", "context": {"cluster": "k", "namespace": "ns"}})
    d["current-context"] = "missing"
    conn = load(d, "other")
    assert (conn.namespace, conn.token, conn.client_cert_pem) == ("ns", None, None)
    assert repr(conn) == "KubeConnection(server='https://k:6443', auth=none, namespace='ns')"
    assert str(conn) == repr(conn)


def test_first_entry_of_a_name_wins_and_empty_values_are_absent() -> None:
    d = doc(context={"namespace": ""}, cluster={"certificate-authority-data": ""})
    d["users"] = [{"name": "u", "user": {"token": ""}}, {"name": "u", "user": {"token": "late"}}]
    d["clusters"].append({"name": "k", "cluster": {"server": "https://late"}})
    conn = load(d)
    assert conn == KubeConnection(server="https://k:6443")
    assert load(doc(user={"token": None})).token is None


def test_http_server_is_taken_and_every_trailing_slash_dropped() -> None:
    assert load(doc({"server": "http://k:8080//"})).server == "http://k:8080"
    assert load(doc({"server": "https://kX/"})).server == "https://kX"


def test_inline_data_wins_over_a_file_and_a_token_over_a_token_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"not even a pem")
    (tmp_path / "token").write_text("from-file")
    conn = load(
        doc(
            {"certificate-authority-data": b64(CA_PEM), "certificate-authority": "ca.crt"},
            {"token": "inline", "tokenFile": "token"},
        ),
        base_dir=tmp_path,
    )
    assert (conn.ca_pem, conn.token) == (CA_PEM, "inline")


def test_file_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (home / "ca.crt").write_bytes(CA_PEM)
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "latin").write_bytes(b"\xe9")
    (tmp_path / "plain").write_bytes(b"no pem here")
    conn = load(
        doc({"certificate-authority": "~/ca.crt"}, {"tokenFile": "empty"}), base_dir=tmp_path
    )
    assert (conn.ca_pem, conn.token) == (CA_PEM, None)
    fields, message = refused(doc(user={"tokenFile": "latin"}), base_dir=tmp_path)
    assert fields == ["users[u].user.tokenFile"] and message.endswith(": not UTF-8")
    fields, message = refused(doc(user={"tokenFile": "gone"}), base_dir=tmp_path)
    assert fields == ["users[u].user.tokenFile"]
    assert f"cannot read {tmp_path / 'gone'}: No such file or directory" in message
    fields, message = refused(doc({"certificate-authority": "plain"}), base_dir=tmp_path)
    assert fields == ["clusters[k].cluster.certificate-authority"]
    assert message.endswith("not a PEM document")
    fields, message = refused(doc({"certificate-authority": "gone"}), base_dir=tmp_path)
    assert message.endswith(f"cannot read {tmp_path / 'gone'}: No such file or directory")


def test_context_names_skip_what_is_not_a_context() -> None:
    assert context_names("contexts: null\n") == []
    assert context_names("{}") == []
    source = yaml.safe_dump({"contexts": ["x", {"name": 1}, {"name": "a"}, {"name": "b"}]})
    assert context_names(source) == ["a", "b"]


def test_dump_writes_one_named_context_and_only_the_credentials_there_are() -> None:
    text = dump_kubeconfig(KubeConnection(server="https://k"), "n")
    assert text.startswith("apiVersion: v1\nkind: Config\nclusters:\n")  # kubectl's order
    bare = yaml.safe_load(text)
    assert bare == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "n", "cluster": {"server": "https://k"}}],
        "users": [{"name": "n", "user": {}}],
        "contexts": [
            {"name": "n", "context": {"cluster": "n", "user": "n", "namespace": "default"}}
        ],
        "current-context": "n",
    }
    full = KubeConnection(
        server="https://k",
        ca_pem=CA_PEM,
        client_cert_pem=CERT_PEM,
        client_key_pem=KEY_PEM,
        token="t",
        insecure_skip_verify=True,
        namespace="ns",
    )
    dumped = yaml.safe_load(dump_kubeconfig(full, "n"))
    assert dumped["clusters"][0]["cluster"] == {
        "server": "https://k",
        "certificate-authority-data": base64.b64encode(CA_PEM).decode(),
        "insecure-skip-tls-verify": True,
    }
    assert dumped["users"][0]["user"] == {
        "token": "t",
        "client-certificate-data": base64.b64encode(CERT_PEM).decode(),
        "client-key-data": base64.b64encode(KEY_PEM).decode(),
    }
    assert load_kubeconfig(dump_kubeconfig(full, "n")) == full
    # a certificate without its key is not written half
    half = KubeConnection(server="https://k", client_cert_pem=CERT_PEM)
    assert yaml.safe_load(dump_kubeconfig(half, "n"))["users"][0]["user"] == {}


def test_flatten_keeps_the_contexts_own_name_by_default(tmp_path: Path) -> None:
    flat = yaml.safe_load(flatten_kubeconfig(yaml.safe_dump(doc()), base_dir=tmp_path))
    assert flat["current-context"] == "c" and flat["users"][0]["name"] == "c"
    other = flatten_kubeconfig(yaml.safe_dump(doc()), "c", base_dir=tmp_path, name="lab")
    assert yaml.safe_load(other)["current-context"] == "lab"


def test_repr_names_the_kind_of_credentials() -> None:
    crt = KubeConnection(server="https://k", client_cert_pem=CERT_PEM, client_key_pem=KEY_PEM)
    assert repr(crt) == "KubeConnection(server='https://k', auth=client-cert, namespace='default')"
    both = KubeConnection(server="https://k", client_cert_pem=CERT_PEM, token="t")
    assert "auth=token," in repr(both)
