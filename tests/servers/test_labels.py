"""Label syntax: the Kubernetes rules, checked without a server."""

from __future__ import annotations

import pytest

from lab.errors import Invalid
from lab.labd.api.servers import (
    check_labels,
    label_key_problem,
    label_value_problem,
    parse_selector,
)


@pytest.mark.parametrize(
    "key",
    ["role", "a", "Role_1.x-y", "example.com/role", "k8s.io/a", "x" * 63, "a" * 253 + "/b"],
)
def test_valid_keys(key: str) -> None:
    assert label_key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "no name"),
        ("-role", "start and end"),
        ("role-", "start and end"),
        ("ro le", "start and end"),
        ("x" * 64, "longer than 63"),
        ("example.com/", "no name"),
        ("/role", "prefix"),
        ("Example.com/role", "prefix"),
        ("a..b/role", "prefix"),
        ("a" * 254 + "/b", "prefix"),
        ("a/b/c", "prefix"),
    ],
)
def test_invalid_keys(key: str, why: str) -> None:
    problem = label_key_problem(key)
    assert problem is not None and why in problem


@pytest.mark.parametrize("value", ["", "worker", "v1.2_3-x", "A" * 63])
def test_valid_values(value: str) -> None:
    assert label_value_problem(value) is None


@pytest.mark.parametrize("value", ["-x", "x-", "a b", "x" * 64, "a/b", "ünï"])
def test_invalid_values(value: str) -> None:
    assert label_value_problem(value) is not None


def test_check_labels_names_the_key() -> None:
    with pytest.raises(Invalid) as info:
        check_labels({"good": "yes", "bad key": "x"}, [])
    assert info.value.details["key"] == "bad key"
    assert "bad key" in info.value.message
    with pytest.raises(Invalid) as info:
        check_labels({"role": "not ok!"}, [])
    assert info.value.details == {"fields": ["body.set.role"], "key": "role"}
    with pytest.raises(Invalid) as info:
        check_labels({}, ["-nope"])
    assert info.value.details["fields"] == ["body.remove"]


def test_selector() -> None:
    assert parse_selector(["role=worker", "zone=a"]) == {"role": "worker", "zone": "a"}
    assert parse_selector(["role="]) == {"role": ""}
    with pytest.raises(Invalid) as info:
        parse_selector(["role"])
    assert info.value.details["fields"] == ["query.label"]
    with pytest.raises(Invalid):
        parse_selector(["bad key=x"])
