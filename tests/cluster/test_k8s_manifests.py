"""contrib/k8s: every document is a valid Kubernetes object, and kustomize lists every file.

Validation deserialises each document into the ``kubernetes`` client's model class (which
checks required fields) after a strict walk over the model's ``openapi_types`` that refuses
unknown fields and wrong scalar types at any depth (the models alone ignore unknown keys).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from lab.labd.config import LabdConfig

kubernetes = pytest.importorskip("kubernetes")

K8S = Path(__file__).parents[2] / "contrib" / "k8s"
# Containers: ``List[T]``, ``Dict[str, T]`` (older clients: ``list[T]``, ``dict(str, T)``).
_LIST = re.compile(r"^[Ll]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:Dict\[str, (.+)\]|dict\(str, (.+)\))$")
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "bytes": (str,),
    "date": (str,),
    "object": (object,),
}


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def model_name(doc: dict[str, Any]) -> str:
    version = str(doc["apiVersion"]).rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + doc["kind"]


def strict(value: Any, type_name: str, path: str) -> None:
    """Raise AssertionError naming ``path`` for a field or value the schema does not allow."""
    if (match := _LIST.match(type_name)) is not None:
        assert isinstance(value, list), f"{path}: expected a list"
        for i, item in enumerate(value):
            strict(item, match.group(1), f"{path}[{i}]")
        return
    if (match := _DICT.match(type_name)) is not None:
        assert isinstance(value, dict), f"{path}: expected a mapping"
        for key, item in value.items():
            strict(item, match.group(1) or match.group(2), f"{path}.{key}")
        return
    if type_name in _SCALARS:
        ok = isinstance(value, _SCALARS[type_name])
        assert ok and not (type_name == "int" and isinstance(value, bool)), (
            f"{path}: {value!r} is not {type_name}"
        )
        return
    model = getattr(kubernetes.client.models, type_name)
    assert isinstance(value, dict), f"{path}: expected a {type_name} mapping"
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, item in value.items():
        assert key in by_json, f"{path}: unknown field {key!r} in {type_name}"
        strict(item, model.openapi_types[by_json[key]], f"{path}.{key}")


@pytest.mark.parametrize(("name", "doc"), documents(), ids=lambda v: str(v)[:40])
def test_document_is_a_valid_kubernetes_object(name: str, doc: dict[str, Any]) -> None:
    klass = model_name(doc)
    assert hasattr(kubernetes.client.models, klass), f"{name}: no model for {klass}"
    strict(doc, klass, f"{name}:{doc['kind']}")
    client = kubernetes.client.ApiClient()
    # The models' own checks (required fields, enums the client knows).
    obj = client._ApiClient__deserialize(doc, klass)
    assert obj.metadata.name


def test_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_labd_deployment_runs_three_ready_checked_replicas() -> None:
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in documents()}
    deployment = objects[("Deployment", "labd")]
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert objects[("StatefulSet", "cockroachdb")]["spec"]["replicas"] == 3
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert (kind, "labd") in objects
    secret = objects[("Secret", "labd-ca")]
    assert "passphrase" in secret["stringData"]
    # Every LABD_* variable the manifests set is a setting labd knows.
    known = {f"LABD_{a.name.upper()}" for a in attrs.fields(LabdConfig)}
    known.add("LABD_CA_PASSPHRASE")
    names = {e["name"] for e in container["env"]}
    names |= set(objects[("ConfigMap", "labd")]["data"])
    assert {n for n in names if n.startswith("LABD_")} <= known


def test_the_strict_walk_refuses_typos_and_wrong_types() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": 3, "selector": {}, "template": {"spec": {"containers": []}}},
    }
    strict(deployment, "V1Deployment", "ok")
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(AssertionError, match="unknown field 'replica'"):
        strict(typo, "V1Deployment", "typo")
    wrong = {**deployment, "spec": {**deployment["spec"], "replicas": "3"}}
    with pytest.raises(AssertionError, match="is not int"):
        strict(wrong, "V1Deployment", "wrong")
