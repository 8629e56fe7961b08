"""Request bodies of labd's routes, structured strictly (unknown or mistyped fields → 400)."""

from __future__ import annotations

from typing import TypeVar

from attrs import Factory, frozen
from quart import request

from lab.errors import Invalid
from lab.model import TokenKind, structure
from lab.model.facts import Facts
from lab.model.safejson import loads
from lab.model.text import Name

T = TypeVar("T")


async def body(cls: type[T]) -> T:
    """The JSON body of the current request as ``cls``; Invalid names every wrong field.

    The body is decoded within size and nesting limits (lab.model.safejson) rather than by
    get_json, which lets a non-UTF-8 or too deeply nested body escape as a 500.
    """
    raw = await request.get_data(as_text=False)
    data = loads(raw)
    if not isinstance(data, dict):
        raise Invalid("request body must be a JSON object", details={"fields": ["body"]})
    return structure(data, cls)


@frozen(kw_only=True)
class EnrollAgent:
    token: str
    csr: str
    hostname: Name
    facts: Facts = Factory(dict)


@frozen(kw_only=True)
class EnrollUser:
    token: str
    csr: str
    # Optional: a user token names its user; when given it must be that name.
    username: Name | None = None


@frozen(kw_only=True)
class Renew:
    csr: str


@frozen(kw_only=True)
class CreateToken:
    kind: TokenKind
    roles: list[Name] = Factory(list)
    ttl_seconds: int = 3600
    reusable: bool = False
    max_uses: int | None = None
    description: Name = ""
    # Bindings (lab.model.JoinToken): user tokens need ``user``; agent tokens may name a
    # hostname and hardware; ``replace`` (needs hostname) may take over an existing server.
    user: Name | None = None
    hostname: Name | None = None
    system_uuid: Name | None = None
    serial: Name | None = None
    replace: bool = False


@frozen(kw_only=True)
class RevokeCert:
    target: Name


@frozen(kw_only=True)
class FinishRotation:
    force: bool = False
