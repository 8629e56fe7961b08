"""lab.modules: module.yaml, values, sources (built-in, directory, tarball with sha256), rendering;
every built-in module renders objects the kubernetes client's models accept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from lab.errors import Invalid, NotFound
from lab.labd.config import LabdConfig
from lab.modules import (
    Cluster,
    Release,
    builtin_names,
    check_values,
    load_builtin,
    load_directory,
    load_tarball,
    package,
    parse_spec,
    redact,
    render,
    resolve,
    satisfies,
    values_from,
)
from lab.modules.spec import placeholder_certificates, schema_path
from lab.modules.values import join_secrets, split_secrets
from tests.cluster.test_k8s_manifests import kubernetes, model_name, strict

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----\n"
SAMPLE_VALUES: dict[str, dict[str, Any]] = {
    "cockroachdb": {
        "tls": {
            "ca_crt": PEM,
            "node_crt": PEM,
            "node_key": KEY,
            "client_crt": PEM,
            "client_key": KEY,
        }
    },
    "labd": {"ca_passphrase": "a-long-enough-passphrase"},
    "lab-bastion": {"node": "node1", "interface": "eno1"},
}
RELEASE = Release(name="db", namespace="lab", revision=1)
CLUSTER = Cluster(name="home", version="v1.31.2+k3s1")


def render_builtin(name: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    module = load_builtin(name)
    given = {**placeholder_certificates(module.spec), **(values or SAMPLE_VALUES[name])}
    checked = check_values(module.spec.parameters, given)
    return list(render(module, checked, release=RELEASE, cluster=CLUSTER).objects)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_the_builtins_are_the_seed_apps() -> None:
    assert builtin_names() == ["cockroachdb", "lab-bastion", "labd"]
    assert set(SAMPLE_VALUES) == set(builtin_names())


@pytest.mark.parametrize("name", ["cockroachdb", "labd", "lab-bastion"])
def test_every_builtin_renders_valid_kubernetes_objects(name: str) -> None:
    objects = render_builtin(name)
    assert objects
    client = kubernetes.client.ApiClient()
    for obj in objects:
        klass = model_name(obj)
        assert hasattr(kubernetes.client.models, klass), f"{name}: no model for {klass}"
        strict(obj, klass, f"{name}:{obj['kind']}")
        model = client._ApiClient__deserialize(obj, klass)
        assert model.metadata.name
        assert obj["metadata"]["namespace"] == "lab"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "labctl"


def test_cockroachdb_is_three_tls_nodes_with_kept_data() -> None:
    module = load_builtin("cockroachdb")
    objects = render_builtin("cockroachdb")
    sts = by_kind(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    command = sts["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--certs-dir=/cockroach/cockroach-certs" in command
    assert "--insecure" not in command
    assert "--join=db-0.db,db-1.db,db-2.db" in command
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    assert set(secrets["db-node-tls"]["data"]) == {"ca.crt", "node.crt", "node.key"}
    # The PVCs the StatefulSet makes are data: never pruned.
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert module.spec.is_data("PersistentVolumeClaim", f"{claim}-db-0")
    assert not module.spec.is_data("Secret", f"{claim}-db-0")


def test_labd_module_sets_only_settings_labd_knows() -> None:
    objects = render_builtin("labd")
    known = {f"LABD_{a.name.upper()}" for a in attrs.fields(LabdConfig)} | {"LABD_CA_PASSPHRASE"}
    deployment = by_kind(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]} | set(by_kind(objects, "ConfigMap")["data"])
    assert {n for n in names if n.startswith("LABD_")} <= known
    assert deployment["spec"]["replicas"] == 3
    url = by_kind(objects, "ConfigMap")["data"]["LABD_DATABASE_URL"]
    assert url.startswith("postgresql://root@crdb-public.db:26257/labd?sslmode=verify-full&")
    assert "sslkey=/etc/lab/db/client.key" in url
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["db-tls"] == "/etc/lab/db"
    tls = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "db-db-tls"]
    assert set(tls[0]["data"]) == {"ca.crt", "client.crt", "client.key"}


def test_bastion_runs_on_the_host_network_with_its_dhcp_mode() -> None:
    objects = render_builtin(
        "lab-bastion",
        {
            **SAMPLE_VALUES["lab-bastion"],
            "dhcp_mode": "dhcp",
            "dhcp_range": "10.0.0.100,10.0.0.200,12h",
        },
    )
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert "NET_ADMIN" in pod["containers"][0]["securityContext"]["capabilities"]["add"]
    config = by_kind(objects, "ConfigMap")["data"]
    assert config["LAB_BASTION_DHCP_MODE"] == "dhcp"
    assert config["LAB_BASTION_DHCP_RANGE"] == "10.0.0.100,10.0.0.200,12h"
    assert config["LAB_BASTION_NO_DHCP"] == "false"
    off = by_kind(
        render_builtin("lab-bastion", {**SAMPLE_VALUES["lab-bastion"], "dhcp_mode": "off"}),
        "ConfigMap",
    )
    assert off["data"]["LAB_BASTION_NO_DHCP"] == "true"
    with pytest.raises(Invalid, match=r"values\.dhcp_range") as caught:
        render_builtin("lab-bastion", {**SAMPLE_VALUES["lab-bastion"], "dhcp_mode": "dhcp"})
    assert caught.value.details["errors"][0]["rule"] == "minLength"


def test_bad_values_name_the_field_and_the_rule() -> None:
    schema = load_builtin("cockroachdb").spec.parameters
    with pytest.raises(Invalid) as caught:
        check_values(schema, {**SAMPLE_VALUES["cockroachdb"], "replicas": 0})
    assert caught.value.message.startswith("values.replicas: 0 is less than the minimum of 1")
    assert "(rule minimum)" in caught.value.message
    assert caught.value.details["fields"] == ["values.replicas"]
    with pytest.raises(Invalid) as caught:
        check_values(schema, {})
    assert caught.value.details["errors"][0] == {
        "field": "values.tls",
        "rule": "required",
        "message": "'tls' is a required property",
    }
    with pytest.raises(Invalid) as caught:
        check_values(schema, {**SAMPLE_VALUES["cockroachdb"], "replica": 3})
    assert caught.value.details["errors"][0]["rule"] == "additionalProperties"


def test_defaults_are_filled_in() -> None:
    values = check_values(load_builtin("cockroachdb").spec.parameters, SAMPLE_VALUES["cockroachdb"])
    assert values["replicas"] == 3
    assert values["storage"] == "10Gi"
    assert values["tls"]["node_key"] == KEY


def test_a_secret_value_never_shows_in_errors_or_redacted_values() -> None:
    schema = {
        "type": "object",
        "properties": {
            "password": {"type": "string", "minLength": 40, "secret": True},
            "db": {"type": "object", "properties": {"key": {"type": "string", "secret": True}}},
            "name": {"type": "string"},
        },
    }
    secret = "hunter2-very-secret"
    with pytest.raises(Invalid) as caught:
        check_values(schema, {"password": secret})
    assert secret not in json.dumps([caught.value.message, caught.value.details])
    assert caught.value.details["fields"] == ["values.password"]
    with pytest.raises(Invalid) as caught:
        check_values(schema, {"db": {"key": 12345678}})
    assert "12345678" not in json.dumps([caught.value.message, caught.value.details])
    values = {"password": secret, "db": {"key": "k-secret"}, "name": "n"}
    public, sealed = split_secrets(schema, values)
    assert public == {"password": "<sealed>", "db": {"key": "<sealed>"}, "name": "n"}
    assert sealed == {"password": secret, "db.key": "k-secret"}
    assert join_secrets(public, sealed) == values
    assert redact(schema, values) == public


def test_values_from_files_then_set() -> None:
    values = values_from(
        ["replicas: 5\ntls: {ca_crt: a, node_key: b}\n", "tls: {node_key: c}\n"],
        ["tls.ca_crt=d", "replicas=7", "enabled=true", "name=a: b", "empty="],
    )
    assert values == {
        "replicas": 7,
        "tls": {"ca_crt": "d", "node_key": "c"},
        "enabled": True,
        "name": "a: b",
        "empty": "",
    }
    for bad in ("novalue", "=x", "a..b=1"):
        with pytest.raises(Invalid, match="KEY=VALUE"):
            values_from([], [bad])
    with pytest.raises(Invalid, match="mapping"):
        values_from(["- a\n"], [])


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ("name: Bad_Name\nversion: 1.0.0\n", "name", "pattern"),
        ("name: ok\nversion: '1.0'\n", "version", "pattern"),
        ("name: ok\n", "(document)", "required"),
        ("name: ok\nversion: 1.0.0\nextra: 1\n", "(document)", "additionalProperties"),
        (
            "name: ok\nversion: 1.0.0\nrequires: {kubernetes: 'any'}\n",
            "requires.kubernetes",
            "pattern",
        ),
        ("name: ok\nversion: 1.0.0\ndata: [{kind: Pvc}]\n", "data.0", "required"),
        (
            "name: ok\nversion: 1.0.0\nhooks: {during-upgrade: []}\n",
            "hooks",
            "additionalProperties",
        ),
    ],
)
def test_module_yaml_errors_name_the_field_and_rule(text: str, field: str, rule: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_spec(text)
    assert caught.value.message.startswith(f"module.yaml: {field}: ")
    assert caught.value.message.endswith(f"(rule {rule})")


def test_parameters_must_be_a_json_schema() -> None:
    with pytest.raises(Invalid, match=r"parameters.* is not a JSON Schema"):
        parse_spec("name: ok\nversion: 1.0.0\nparameters: {type: 12}\n")


def test_the_json_schema_file_is_the_one_used() -> None:
    schema = json.loads(schema_path().read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema_path() == Path(__file__).parents[2] / "schema" / "module.schema.json"
    for name in builtin_names():
        doc = yaml.safe_load(
            (Path(__file__).parents[2] / "modules" / name / "module.yaml").read_text()
        )
        assert doc["name"] == name


def test_versions_and_constraints() -> None:
    assert satisfies("v1.31.2+k3s1", ">=1.28")
    assert not satisfies("1.27.9", ">=1.28")
    assert satisfies("1.2.0", ">=1.0,<2")
    assert not satisfies("2.0.0", ">=1.0,<2")
    assert not satisfies("1.2.0-rc1", ">=1.2.0")


def test_an_old_cluster_is_refused() -> None:
    module = load_builtin("labd")
    given = {**placeholder_certificates(module.spec), **SAMPLE_VALUES["labd"]}
    values = check_values(module.spec.parameters, given)
    with pytest.raises(Invalid, match=r"requires Kubernetes >=1\.28; cluster old runs v1\.25\.0"):
        render(module, values, release=RELEASE, cluster=Cluster(name="old", version="v1.25.0"))


def test_an_unknown_builtin_or_version_is_refused() -> None:
    assert resolve("cockroachdb@1.0.0").spec.version == "1.0.0"
    with pytest.raises(NotFound, match=r"module cockroachdb has no version 9\.9\.9"):
        resolve("cockroachdb@9.9.9")
    with pytest.raises(NotFound, match="no built-in module 'nope'"):
        resolve("nope")


def write_module(root: Path, *, namespace: str = "") -> Path:
    (root / "templates").mkdir(parents=True)
    (root / "module.yaml").write_text(
        "name: web\nversion: 2.1.0\nparameters:\n  type: object\n  properties:\n"
        "    greeting: {type: string, default: hello}\n"
    )
    ns = f"\n  namespace: {namespace}" if namespace else ""
    (root / "templates" / "cm.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ release.name }}}}-cfg{ns}\n"
        "data:\n  greeting: {{ values.greeting }}\n"
    )
    return root


def test_package_then_load_and_a_tampered_tarball_is_refused(tmp_path: Path) -> None:
    source = write_module(tmp_path / "web")
    archive, digest = package(source, tmp_path / "dist")
    assert archive.name == "web-2.1.0.tar.gz"
    assert digest == hashlib.sha256(archive.read_bytes()).hexdigest()
    # Deterministic: the same files make the same archive.
    again, digest_again = package(source, tmp_path / "dist2")
    assert digest_again == digest
    module = load_tarball(archive)
    assert module.templates == load_directory(source).templates
    assert resolve(f"{archive}@2.1.0").spec.ref == "web@2.1.0"
    with pytest.raises(NotFound, match=r"not version 3\.0\.0"):
        resolve(f"{archive}@3.0.0")
    data = bytearray(archive.read_bytes())
    data[-12] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(Invalid, match="the archive was changed"):
        load_tarball(archive)
    with pytest.raises(Invalid, match="the archive was changed"):
        load_tarball(again, "0" * 64)
    (again.with_name(again.name + ".sha256")).unlink()
    with pytest.raises(Invalid, match="no sha256 given"):
        load_tarball(again)
    assert load_tarball(again, digest).spec.ref == "web@2.1.0"


def test_an_object_in_another_namespace_is_refused(tmp_path: Path) -> None:
    module = load_directory(write_module(tmp_path / "web", namespace="kube-system"))
    with pytest.raises(Invalid, match="in namespace 'kube-system', the release in 'lab'"):
        render(module, {"greeting": "x"}, release=RELEASE, cluster=CLUSTER)


def test_the_manifest_and_its_digest_follow_the_values(tmp_path: Path) -> None:
    module = load_directory(write_module(tmp_path / "web"))
    one = render(module, {"greeting": "a"}, release=RELEASE, cluster=CLUSTER)
    same = render(module, {"greeting": "a"}, release=RELEASE, cluster=CLUSTER)
    other = render(module, {"greeting": "b"}, release=RELEASE, cluster=CLUSTER)
    assert one.digest == same.digest != other.digest
    assert one.object_keys() == ["v1/ConfigMap/lab/db-cfg"]
    assert list(yaml.safe_load_all(one.manifest)) == list(one.objects)
