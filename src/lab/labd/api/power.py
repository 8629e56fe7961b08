"""Power control of servers and bastion machines (docs/power.md).

``PUT /api/power/{kind}/{name}`` sets the driver (the password in labd's secrets store),
``GET /api/power/{kind}/{name}`` asks its power state, ``POST .../{action}`` runs one of
on|off|cycle|reset (body ``{"next_boot": "pxe"}`` optional). RBAC is ``power:ACTION`` on
``{kind}/{name}``; every action is audited with the driver and the BMC's answer, never the
password.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import trio
from attrs import Factory, frozen
from quart import Blueprint, request

from lab.errors import Conflict, Invalid, LabError, NotFound, Unavailable
from lab.labd.access.auth import requires
from lab.labd.api.bodies import body
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.labd.relay.relay import current_hub
from lab.labd.secrets.power import SECRET_MARK, power_secret_name
from lab.model.safejson import loads
from lab.pki import SEAL_LABEL, unseal
from lab.power import run_action
from lab.power.base import PowerDriver
from lab.power.drivers import build, check_settings
from lab.proto import DataFrame
from lab.proto.messages import Error, ExecExit, ExecStart
from lab.store import PowerSetting

bp = Blueprint("power", __name__)
KINDS = ("server", "machine")
_MACHINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}")
# How long the agent driver waits for its command's exit (a reboot may never answer).
AGENT_DEADLINE = 30.0
AGENT_OUTPUT = 4096


@frozen(kw_only=True)
class SetDriver:
    driver: str
    settings: dict[str, Any] = Factory(dict)
    password: str = ""


# The power row's ``sealed`` column says where the password is: "" none, SECRET_MARK in the
# secrets store, "v1:..." sealed in the row itself (written before the secrets store; labd
# moves those at start, lab.labd.secrets.power; one that did not open is read here).
async def _password(target: str, sealed: str) -> str:
    if sealed == SECRET_MARK:
        return (await ctx().secrets.get(power_secret_name(target))).decode("utf-8")
    return unseal(ctx().audit_keys.chain.derive(SEAL_LABEL), target, sealed)


async def _target(kind: str, name: str) -> str:
    if kind not in KINDS:
        raise NotFound(f"no power target kind {kind!r} (server or machine)")
    if kind == "server":
        await ctx().store.servers.get_by_name(name)
    elif not _MACHINE_NAME.fullmatch(name):
        # A bastion's machines live in the bastion's inventory, not labd's: a machine target
        # is whatever its driver was set under (a host name or a MAC), checked for shape only.
        raise Invalid(
            f"machine name {name!r} must be a host name or a MAC address",
            details={"fields": ["path.name"]},
        )
    return f"{kind}/{name}"


async def _driver(target: str) -> PowerDriver:
    try:
        setting = await ctx().store.power.get(target)
    except NotFound as exc:
        raise NotFound(
            f"{target} has no power driver (labctl power set {target} --driver …)",
            details={"resource": target},
        ) from exc
    password = await _password(target, setting.sealed)
    if setting.driver != "agent":
        return build(target, setting.driver, setting.settings, password)
    context = ctx()
    name = target.partition("/")[2]

    async def online() -> bool:
        return current_hub(context).is_online(name)

    async def run(argv: Sequence[str]) -> tuple[int, str]:
        return await _run_on_agent(context, name, argv)

    return build(target, "agent", setting.settings, "", agent_run=run, agent_online=online)


async def _run_on_agent(context: Any, name: str, argv: Sequence[str]) -> tuple[int, str]:
    """Run ``argv`` on ``name``'s agent through the exec path; (exit code, first output)."""
    out = bytearray()
    with trio.move_on_after(AGENT_DEADLINE):
        start = ExecStart(stream_id=1, argv=list(argv))
        async with current_hub(context).agent_stream(name, start) as stream:
            async for item in stream:
                if isinstance(item, DataFrame):
                    out += item.payload[: max(0, AGENT_OUTPUT - len(out))]
                elif isinstance(item, ExecExit):
                    code = item.code if item.code is not None else 128
                    return code, out.decode("utf-8", errors="replace")
                elif isinstance(item, Error):
                    raise Conflict(f"agent: {name} could not run {argv[0]}: {item.message}")
        raise Unavailable(f"agent: {name} disconnected while running {argv[0]}")
    raise Unavailable(f"agent: {argv[0]} on {name} did not finish within {AGENT_DEADLINE:g}s")


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
    if change.driver == "agent" and kind != "server":
        raise Invalid(
            "the agent driver needs an enrolled agent: only servers have one",
            details={"fields": ["body.driver"]},
        )
    target = await _target(kind, name)
    annotate(driver=change.driver, settings=settings, password=bool(change.password))
    if change.password:
        await ctx().secrets.put(power_secret_name(target), change.password.encode("utf-8"))
    else:
        await ctx().secrets.delete(power_secret_name(target))
    setting = PowerSetting(
        target=target,
        driver=change.driver,
        settings=settings,
        sealed=SECRET_MARK if change.password else "",
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
