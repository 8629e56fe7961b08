"""Power control of servers and bastion machines (docs/power.md).

``PUT /api/power/{kind}/{name}`` sets the driver (the password sealed at rest),
``GET /api/power/{kind}/{name}`` asks its power state, ``POST .../{action}`` runs one of
on|off|cycle|reset (body ``{"next_boot": "pxe"}`` optional). RBAC is ``power:ACTION`` on
``{kind}/{name}``; every action is audited with the driver and the BMC's answer, never the
password.
"""

from __future__ import annotations

from typing import Any

from attrs import Factory, frozen
from quart import Blueprint, request

from lab.errors import Invalid, LabError, NotFound
from lab.labd.access.auth import requires
from lab.labd.api.bodies import body
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.model.safejson import loads
from lab.pki import SEAL_LABEL, seal, unseal
from lab.power import run_action
from lab.power.base import PowerDriver
from lab.power.drivers import build, check_settings
from lab.store import PowerSetting

bp = Blueprint("power", __name__)
KINDS = ("server", "machine")


@frozen(kw_only=True)
class SetDriver:
    driver: str
    settings: dict[str, Any] = Factory(dict)
    password: str = ""


def _key() -> bytes:
    return ctx().audit_keys.chain.derive(SEAL_LABEL)


async def _target(kind: str, name: str) -> str:
    if kind not in KINDS:
        raise NotFound(f"no power target kind {kind!r} (server or machine)")
    store = ctx().store
    if kind == "server":
        await store.servers.get_by_name(name)
    elif not any(name in (m.hostname, m.mac) for m in await store.machines.list()):
        raise NotFound(f"machine {name!r} not found", details={"resource": f"machine/{name}"})
    return f"{kind}/{name}"


async def _driver(target: str) -> PowerDriver:
    try:
        setting = await ctx().store.power.get(target)
    except NotFound as exc:
        raise NotFound(
            f"{target} has no power driver (labctl power set {target} --driver …)",
            details={"resource": target},
        ) from exc
    password = unseal(_key(), target, setting.sealed)
    return build(target, setting.driver, setting.settings, password)


def _view(setting: PowerSetting) -> dict[str, Any]:
    return {
        "target": setting.target,
        "driver": setting.driver,
        "settings": setting.settings,
        "password": bool(setting.sealed),
        "updated_at": setting.updated_at.isoformat() if setting.updated_at else None,
    }


@bp.put("/api/power/<kind>/<name>")
@requires("user", action="power:set", resource="{kind}/{name}")
async def set_driver(kind: str, name: str) -> dict[str, Any]:
    change = await body(SetDriver)
    settings = check_settings(change.driver, change.settings)
    if change.driver == "agent":
        raise Invalid(
            "the agent driver is not available through labd yet; use wol, redfish or ipmi",
            details={"fields": ["body.driver"]},
        )
    target = await _target(kind, name)
    annotate(driver=change.driver, settings=settings, password=bool(change.password))
    setting = PowerSetting(
        target=target,
        driver=change.driver,
        settings=settings,
        sealed=seal(_key(), target, change.password),
    )
    return _view(await ctx().store.power.set(setting))


@bp.get("/api/power/<kind>/<name>")
@requires("user", action="power:status", resource="{kind}/{name}")
async def status(kind: str, name: str) -> dict[str, Any]:
    target = await _target(kind, name)
    driver = await _driver(target)
    result = await run_action(driver, "status")
    return {"target": target, "driver": result.driver, "power": result.power}


async def _act(kind: str, name: str, action: str) -> dict[str, Any]:
    raw = await request.get_data(as_text=False)
    data = loads(raw) if raw.strip() else {}
    next_boot = data.get("next_boot") if isinstance(data, dict) else None
    if next_boot not in (None, "pxe"):
        raise Invalid('next_boot must be "pxe"', details={"fields": ["body.next_boot"]})
    target = await _target(kind, name)
    driver = await _driver(target)
    annotate(driver=driver.name, next_boot=next_boot)
    try:
        result = await run_action(driver, action, next_boot_pxe=next_boot == "pxe")
    except LabError as exc:
        annotate(answer=exc.message)
        raise
    annotate(answer=result.answer, power=result.power)
    return {
        "target": target,
        "driver": result.driver,
        "action": action,
        "power": result.power,
        "answer": result.answer,
        "next_boot": result.next_boot,
    }


def _route(action: str) -> None:
    async def view(kind: str, name: str) -> dict[str, Any]:
        return await _act(kind, name, action)

    view.__name__ = f"power_{action}"
    guarded = requires("user", action=f"power:{action}", resource="{kind}/{name}")(view)
    bp.post(f"/api/power/<kind>/<name>/{action}")(guarded)


for _action in ("on", "off", "cycle", "reset"):
    _route(_action)
