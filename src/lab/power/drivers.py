"""Build a driver from stored settings (JSON, without secrets) and its unsealed password."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.errors import Invalid
from lab.power.agent import AgentDriver, Online, Runner
from lab.power.base import PowerDriver
from lab.power.ipmi import IpmiDriver
from lab.power.redfish import RedfishDriver
from lab.power.wol import WolDriver, parse_mac

DRIVERS = ("wol", "redfish", "ipmi", "agent")
# The settings each driver accepts; the password is never among them (it is sealed apart).
FIELDS: dict[str, dict[str, type]] = {
    "wol": {"mac": str, "broadcast": str, "port": int, "interface": str},
    "redfish": {
        "url": str, "system": str, "username": str, "insecure": bool, "ca_file": str,
        "deadline": float,
    },
    "ipmi": {"host": str, "port": int, "username": str, "deadline": float},
    "agent": {"reboot_argv": list, "poweroff_argv": list},
}  # fmt: skip
REQUIRED = {"wol": ("mac",), "redfish": ("url",), "ipmi": ("host", "username"), "agent": ()}


def _bad(field: str, why: str) -> Invalid:
    return Invalid(f"settings.{field}: {why}", details={"fields": [f"body.settings.{field}"]})


def check_settings(driver: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``driver``, type-checked; Invalid naming the first wrong field."""
    if driver not in FIELDS:
        raise Invalid(
            f"driver {driver!r} is not one of {', '.join(DRIVERS)}",
            details={"fields": ["body.driver"]},
        )
    fields = FIELDS[driver]
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in fields:
            raise _bad(key, f"not a setting of the {driver} driver ({', '.join(fields)})")
        want = fields[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise _bad(key, f"must be {want.__name__}")
        if isinstance(value, list) and not (value and all(isinstance(a, str) and a for a in value)):
            raise _bad(key, "must be a non-empty argv of strings")
        if isinstance(value, float) and not 0 < value <= 600:
            raise _bad(key, "must be between 0 and 600 seconds")
        out[key] = value
    for key in REQUIRED[driver]:
        if not out.get(key):
            raise _bad(key, f"is required for the {driver} driver")
    if driver == "wol":
        try:
            parse_mac(out["mac"])
        except Invalid as exc:
            raise _bad("mac", exc.message) from exc
    if driver == "redfish" and not str(out["url"]).startswith(("http://", "https://")):
        raise _bad("url", "must start with https:// (or http://)")
    return out


def build(
    target: str,
    driver: str,
    settings: Mapping[str, Any],
    password: str,
    *,
    agent_run: Runner | None = None,
    agent_online: Online | None = None,
) -> PowerDriver:
    s = check_settings(driver, settings)
    if driver == "wol":
        return WolDriver(
            s["mac"],
            broadcast=s.get("broadcast", "255.255.255.255"),
            port=s.get("port", 9),
            interface=s.get("interface"),
        )
    if driver == "redfish":
        return RedfishDriver(
            s["url"],
            system=s.get("system"),
            username=s.get("username"),
            password=password or None,
            verify=not s.get("insecure", False),
            ca_file=s.get("ca_file"),
            deadline=s.get("deadline", 20.0),
        )
    if driver == "ipmi":
        return IpmiDriver(
            s["host"],
            port=s.get("port", 623),
            username=s["username"],
            password=password,
            deadline=s.get("deadline", 20.0),
        )
    if agent_run is None or agent_online is None:
        raise Invalid(f"the agent driver needs an enrolled agent; {target} is not a server")
    extra: dict[str, Any] = {}
    if "reboot_argv" in s:
        extra["reboot_argv"] = s["reboot_argv"]
    if "poweroff_argv" in s:
        extra["poweroff_argv"] = s["poweroff_argv"]
    return AgentDriver(target, run=agent_run, online=agent_online, **extra)
