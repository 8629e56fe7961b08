"""Helpers for POST /api/apply against a harness labd."""

from __future__ import annotations

from typing import Any

import httpx

from tests.labd.harness import Credentials, RunningLabd


def role(name: str, description: str = "", *rules: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "kind": "Role",
        "name": name,
        "spec": {
            "description": description,
            "rules": [{"effect": e, "action": a, "resource": r} for e, a, r in rules],
        },
    }


def user(name: str, *roles: str, disabled: bool = False) -> dict[str, Any]:
    return {"kind": "User", "name": name, "spec": {"roles": list(roles), "disabled": disabled}}


async def apply(
    http: httpx.AsyncClient, *objects: dict[str, Any], **options: Any
) -> httpx.Response:
    return await http.post("/api/apply", json={"objects": list(objects), **options})


async def user_with_roles(
    labd: RunningLabd, admin: Credentials, name: str, *rules: tuple[str, str, str]
) -> Credentials:
    """Enroll ``name`` holding one role of its own, ``name``-role, with ``rules``."""
    async with labd.client(admin) as http:
        resp = await apply(http, role(f"{name}-role", "", *rules), user(name, f"{name}-role"))
        assert resp.status_code == 200, resp.text
    token = await labd.create_token(admin, "user", user=name, roles=[f"{name}-role"])
    return await labd.enroll_user(name, token)
