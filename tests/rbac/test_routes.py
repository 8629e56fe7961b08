"""Every route declares its policy and is in schema/openapi.yaml; the spec itself is valid."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from lab.labd.access.auth import policy_of
from lab.labd.app import create_app
from lab.labd.config import LabdConfig
from tests.rbac.spec import openapi_path, spec

# The only routes reachable without a client certificate.
PUBLIC = {
    "/healthz",
    "/health",
    "/health/live",
    "/health/ready",
    "/health/detailed",
    "/api/ca",
    "/api/crl",
    "/api/auth/enroll",
    "/api/auth/user-enroll",
    "/api/auth/bastion-enroll",
}
IMPLICIT = {"HEAD", "OPTIONS"}


class _Context:
    config = LabdConfig(rate_global=0, rate_tokens=0)


def routes() -> list[tuple[str, str, Any]]:
    app = create_app(_Context())  # type: ignore[arg-type]
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - IMPLICIT):
            out.append((rule.rule, method, app.view_functions[rule.endpoint]))
    return out


ROUTES = routes()


def _route_id(value: object) -> str:
    """A test id that is the same in every process: a view by its name, never its address."""
    return str(getattr(value, "__qualname__", value))[:40]


def test_the_app_has_routes() -> None:
    assert len(ROUTES) > 30
    assert ("/api/users", "POST") in {(r, m) for r, m, _ in ROUTES}


@pytest.mark.parametrize(("rule", "method", "view"), ROUTES, ids=_route_id)
def test_every_route_declares_a_policy(rule: str, method: str, view: Any) -> None:
    policy = policy_of(view)
    assert policy is not None, f"{method} {rule} declares no policy (@public or @requires)"
    if policy.public:
        assert rule in PUBLIC, f"{method} {rule} is public but not on the public list"
    else:
        assert policy.kinds, f"{method} {rule} names no certificate kind"
        if "user" in policy.kinds and not rule.startswith("/ws/"):
            assert policy.action, f"{method} {rule} lets users in without an RBAC action"


@pytest.mark.parametrize(("rule", "method", "view"), ROUTES, ids=_route_id)
def test_every_route_is_in_the_openapi_spec(rule: str, method: str, view: Any) -> None:
    paths = spec()["paths"]
    template = openapi_path(rule)
    assert template in paths, f"{rule} is missing from schema/openapi.yaml"
    assert method.lower() in paths[template], f"{method} {rule} is missing from openapi.yaml"
    operation = paths[template][method.lower()]
    policy = policy_of(view)
    assert policy is not None
    if policy.public:
        assert operation.get("security") == [], f"{method} {rule} is public: security: []"
    else:
        assert "security" not in operation, f"{method} {rule} needs mutualTLS"
        if policy.action:
            assert operation.get("x-action") == policy.action, f"{method} {rule} x-action"
            assert operation.get("x-resource") == policy.resource, f"{method} {rule} x-resource"


def test_the_spec_has_no_route_the_app_lacks() -> None:
    served = {(openapi_path(r), m.lower()) for r, m, _ in ROUTES}
    declared = {
        (path, method)
        for path, ops in spec()["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert declared - served == set()


def test_the_spec_is_valid_openapi() -> None:
    validate(spec())  # type: ignore[arg-type]
    assert spec()["components"]["securitySchemes"]["mutualTLS"]["type"] == "mutualTLS"
