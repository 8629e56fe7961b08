"""Kubeconfig parsing: contexts, inline and file data, token and client-cert users, bad input
named by its kubeconfig field."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import pki
from lab.errors import Invalid
from lab.kube import (
    KubeConnection,
    context_names,
    dump_kubeconfig,
    flatten_kubeconfig,
    load_kubeconfig,
)

CA = pki.create_ca("test cluster CA")
CA_PEM = CA.cert_pem()
KEY_PEM = pki.generate_key()
CERT_PEM, _ = pki.issue_user_cert(CA, pki.make_csr(KEY_PEM, "x"), "admin")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def config(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "home",
                "cluster": {
                    "server": "https://10.0.0.1:6443",
                    "certificate-authority-data": b64(CA_PEM),
                },
            },
            {
                "name": "away",
                "cluster": {
                    "server": "https://away.example:6443/",
                    "insecure-skip-tls-verify": True,
                },
            },
        ],
        "users": [
            {"name": "tok", "user": {"token": "s3cret-token"}},
            {
                "name": "crt",
                "user": {"client-certificate-data": b64(CERT_PEM), "client-key-data": b64(KEY_PEM)},
            },
        ],
        "contexts": [
            {"name": "home-tok", "context": {"cluster": "home", "user": "tok"}},
            {
                "name": "away-crt",
                "context": {"cluster": "away", "user": "crt", "namespace": "kube-system"},
            },
        ],
        "current-context": "home-tok",
    }
    doc.update(over)
    return doc


def text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc)


def fields_of(exc: pytest.ExceptionInfo[Invalid]) -> list[str]:
    return list(exc.value.details["fields"])


def test_current_context_with_token_and_inline_ca() -> None:
    conn = load_kubeconfig(text(config()))
    assert conn == KubeConnection(
        server="https://10.0.0.1:6443", ca_pem=CA_PEM, token="s3cret-token", namespace="default"
    )


def test_named_context_with_client_cert_namespace_and_insecure() -> None:
    conn = load_kubeconfig(text(config()), "away-crt")
    assert conn.server == "https://away.example:6443"  # trailing slash dropped
    assert conn.client_cert_pem == CERT_PEM and conn.client_key_pem == KEY_PEM
    assert conn.token is None and conn.ca_pem is None
    assert conn.insecure_skip_verify is True
    assert conn.namespace == "kube-system"
    assert context_names(text(config())) == ["home-tok", "away-crt"]


def test_unknown_context_and_no_current_context_are_named() -> None:
    with pytest.raises(Invalid, match="no entry named 'nope'") as exc:
        load_kubeconfig(text(config()), "nope")
    assert fields_of(exc) == ["contexts"]
    with pytest.raises(Invalid) as exc:
        load_kubeconfig(text(config(**{"current-context": ""})))
    assert fields_of(exc) == ["current-context"]


def test_context_naming_a_missing_user_is_named() -> None:
    doc = config(contexts=[{"name": "c", "context": {"cluster": "home", "user": "ghost"}}])
    with pytest.raises(Invalid, match="ghost") as exc:
        load_kubeconfig(text(doc), "c")
    assert fields_of(exc) == ["users"]


def files_config(tmp_path: Path) -> str:
    (tmp_path / "ca.crt").write_bytes(CA_PEM)
    (tmp_path / "me.crt").write_bytes(CERT_PEM)
    (tmp_path / "me.key").write_bytes(KEY_PEM)
    (tmp_path / "token").write_text("from-a-file\n")
    doc = config(
        clusters=[
            {
                "name": "home",
                "cluster": {"server": "https://h:6443", "certificate-authority": "ca.crt"},
            }
        ],
        users=[
            {"name": "tok", "user": {"tokenFile": "token"}},
            {
                "name": "crt",
                "user": {"client-certificate": "me.crt", "client-key": str(tmp_path / "me.key")},
            },
        ],
        contexts=[
            {"name": "home-tok", "context": {"cluster": "home", "user": "tok"}},
            {"name": "home-crt", "context": {"cluster": "home", "user": "crt"}},
        ],
    )
    return text(doc)


def test_file_references_are_read_relative_to_base_dir(tmp_path: Path) -> None:
    source = files_config(tmp_path)
    tok = load_kubeconfig(source, base_dir=tmp_path)
    assert tok.ca_pem == CA_PEM and tok.token == "from-a-file"
    crt = load_kubeconfig(source, "home-crt", base_dir=tmp_path)
    assert crt.client_cert_pem == CERT_PEM and crt.client_key_pem == KEY_PEM


def test_file_references_are_refused_without_base_dir(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="inline") as exc:
        load_kubeconfig(files_config(tmp_path))
    assert fields_of(exc) == ["clusters[home].cluster.certificate-authority"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    source = files_config(tmp_path)
    (tmp_path / "me.crt").unlink()
    with pytest.raises(Invalid, match="cannot read") as exc:
        load_kubeconfig(source, "home-crt", base_dir=tmp_path)
    assert fields_of(exc) == ["users[crt].user.client-certificate"]


def test_flatten_keeps_one_context_with_everything_inline(tmp_path: Path) -> None:
    flat = flatten_kubeconfig(files_config(tmp_path), "home-crt", base_dir=tmp_path, name="lab")
    doc = yaml.safe_load(flat)
    assert [c["name"] for c in doc["contexts"]] == ["lab"]
    assert "client-key" not in doc["users"][0]["user"]
    assert load_kubeconfig(flat) == load_kubeconfig(
        files_config(tmp_path), "home-crt", base_dir=tmp_path
    )


def test_dump_round_trips() -> None:
    for ctx in ("home-tok", "away-crt"):
        conn = load_kubeconfig(text(config()), ctx)
        assert load_kubeconfig(dump_kubeconfig(conn, "x")) == conn


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda d: d["clusters"][0]["cluster"].update(server="10.0.0.1:6443"),
            "clusters[home].cluster.server",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update({"certificate-authority-data": "@@@"}),
            "clusters[home].cluster.certificate-authority-data",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update(
                {"certificate-authority-data": b64(b"not a pem")}
            ),
            "clusters[home].cluster.certificate-authority-data",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update({"insecure-skip-tls-verify": "yes"}),
            "clusters[home].cluster.insecure-skip-tls-verify",
        ),
        (lambda d: d["users"][0]["user"].update(exec={"command": "aws"}), "users[tok].user.exec"),
        (lambda d: d["users"][0]["user"].update(token=42), "users[tok].user.token"),
        (
            lambda d: d["users"][0]["user"].update({"client-certificate-data": b64(CERT_PEM)}),
            "users[tok].user.client-key-data",
        ),
        (lambda d: d.update(clusters="nope"), "clusters"),
        (lambda d: d["contexts"][0].pop("name"), "contexts[0].name"),
    ],
)
def test_bad_input_names_the_field(mutate: Any, field: str) -> None:
    doc = config()
    mutate(doc)
    with pytest.raises(Invalid) as exc:
        load_kubeconfig(text(doc))
    assert fields_of(exc) == [field]
    assert "s3cret-token" not in str(exc.value)


@pytest.mark.parametrize("source", ["", "- a list", "key: [unclosed", "just text"])
def test_not_a_kubeconfig(source: str) -> None:
    with pytest.raises(Invalid) as exc:
        load_kubeconfig(source)
    assert fields_of(exc) == ["kubeconfig"]


def test_repr_never_shows_credentials() -> None:
    conn = load_kubeconfig(text(config()))
    assert "s3cret-token" not in repr(conn) and "s3cret-token" not in str(conn)
    assert "auth=token" in repr(conn)
    crt = load_kubeconfig(text(config()), "away-crt")
    assert "PRIVATE" not in repr(crt)
