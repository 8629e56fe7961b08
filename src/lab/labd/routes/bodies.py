"""Request bodies of labd's routes, structured strictly (unknown or mistyped fields → 400)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from attrs import Factory, frozen
from quart import request

from lab.errors import Invalid
from lab.model import TokenKind, structure

T = TypeVar("T")


async def body(cls: type[T]) -> T:
    """The JSON body of the current request as ``cls``; Invalid names every wrong field."""
    raw = await request.get_data(as_text=False)
    try:
        # Decoded here rather than by get_json, which lets a non-UTF-8 body escape as a 500.
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Invalid("request body must be a JSON object", details={"fields": ["body"]})
    return structure(data, cls)


@frozen(kw_only=True)
class EnrollAgent:
    token: str
    csr: str
    hostname: str
    facts: dict[str, Any] = Factory(dict)


@frozen(kw_only=True)
class EnrollUser:
    token: str
    csr: str
    # Optional: a user token names its user; when given it must be that name.
    username: str | None = None


@frozen(kw_only=True)
class Renew:
    csr: str


@frozen(kw_only=True)
class CreateToken:
    kind: TokenKind
    roles: list[str] = Factory(list)
    ttl_seconds: int = 3600
    reusable: bool = False
    max_uses: int | None = None
    description: str = ""
    # Bindings (lab.model.JoinToken): user tokens need ``user``; agent tokens may name a
    # hostname and hardware; ``replace`` (needs hostname) may take over an existing server.
    user: str | None = None
    hostname: str | None = None
    system_uuid: str | None = None
    serial: str | None = None
    replace: bool = False


@frozen(kw_only=True)
class RevokeCert:
    target: str


@frozen(kw_only=True)
class FinishRotation:
    force: bool = False
