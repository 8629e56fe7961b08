"""schema/openapi.yaml for tests: route lookup and validation of real responses."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "schema" / "openapi.yaml"
ROOT = "urn:labd:openapi"


@cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return data


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(spec(), default_specification=DRAFT202012)
    return Registry().with_resource(ROOT, resource)


def openapi_path(rule: str) -> str:
    """``/api/users/<name>`` (werkzeug) -> ``/api/users/{name}`` (OpenAPI)."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _response(template: str, method: str, status: int) -> tuple[dict[str, Any], str]:
    responses = spec()["paths"][template][method.lower()]["responses"]
    if str(status) not in responses:
        raise AssertionError(f"{method} {template} answered {status}, not in the spec")
    resp = responses[str(status)]
    where = "#/" + _pointer("paths", template, method.lower(), "responses", str(status))
    if "$ref" in resp:
        where = resp["$ref"]
        resp = spec()["components"]["responses"][where.rsplit("/", 1)[-1]]
    return resp, where


def check(response: httpx.Response, template: str) -> None:
    """Fail unless ``response`` (to a request on the OpenAPI path ``template``) is what the
    spec declares: a listed status, its content type and a body valid against its schema."""
    method = response.request.method
    resp, where = _response(template, method, response.status_code)
    content = resp.get("content")
    if not content:
        return
    ctype = response.headers.get("content-type", "").split(";")[0].strip()
    assert ctype in content, f"{method} {template}: content type {ctype} not in {list(content)}"
    if ctype != "application/json":
        return
    schema = {"$ref": f"{ROOT}{where}/content/application~1json/schema"}
    validator = Draft202012Validator(schema, registry=_registry(), format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(response.json()), key=lambda e: list(e.path))
    assert not errors, f"{method} {template} {response.status_code}: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5]
    )
