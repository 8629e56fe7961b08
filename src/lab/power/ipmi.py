"""IPMI 2.0 (lanplus) through ``pyghmi`` (optional extra ``labctl[power]``).

Each call logs in, does its one command and logs out, in a worker thread under the deadline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from lab.errors import Conflict, LabError, PermissionDenied, Unavailable
from lab.power.base import PowerState, in_thread

T = TypeVar("T")

_AUTH = ("password", "unauthorized name", "unauthorized", "invalid user", "privilege")
_STATE = ("present state", "not supported", "invalid command", "cannot execute")


def _pyghmi() -> tuple[Any, Any]:
    """pyghmi's ``Command`` class and its exceptions module; Unavailable when it is missing."""
    try:
        from pyghmi import exceptions
        from pyghmi.ipmi import command
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise Unavailable("the ipmi driver needs pyghmi: pip install 'labctl[power]'") from exc
    return command.Command, exceptions


class IpmiDriver:
    name = "ipmi"

    def __init__(
        self,
        host: str,
        *,
        username: str,
        password: str,
        port: int = 623,
        deadline: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.deadline = deadline

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        command_class, pyghmi_exc = _pyghmi()
        where = f"{self.host}:{self.port}"
        try:
            cmd = command_class(
                bmc=self.host,
                userid=self.username,
                password=self.password,
                port=self.port,
            )
        except pyghmi_exc.IpmiException as exc:
            text = str(exc.args[0]) if exc.args and exc.args[0] else ""
            if any(word in text.lower() for word in _AUTH):
                raise PermissionDenied(f"ipmi: {where} refused the credentials ({text})") from exc
            raise Unavailable(
                f"ipmi: cannot reach {where}" + (f": {text}" if text else " (no answer)"),
                details={"deadline": self.deadline},
            ) from exc
        try:
            return fn(cmd)
        except LabError:
            raise
        except pyghmi_exc.IpmiException as exc:
            text = str(exc.args[0]) if exc.args and exc.args[0] else "no answer"
            if any(word in text.lower() for word in _STATE):
                raise Conflict(f"ipmi: {where} refused {what}: {text}") from exc
            raise Unavailable(f"ipmi: {where} {what} failed: {text}") from exc
        finally:
            # A failed logout changes nothing on the machine.
            with contextlib.suppress(Exception):
                cmd.ipmi_session.logout()
            _forget_login(self.host, self.username, self.password, self.port)

    async def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        return await in_thread(
            lambda: self._call(what, fn),
            deadline=self.deadline,
            what=f"ipmi {self.host}:{self.port}",
        )

    def _set(self, what: str, state: str) -> Callable[[Any], str]:
        def act(cmd: Any) -> str:
            answer = cmd.set_power(state, wait=False)
            pending = answer.get("pendingpowerstate") or answer.get("powerstate") or state
            return f"chassis power {state}: {pending}"

        return act

    async def status(self) -> PowerState:
        def get(cmd: Any) -> PowerState:
            value = str(cmd.get_power().get("powerstate", ""))
            return "on" if value == "on" else "off" if value == "off" else "unknown"

        return await self._run("status", get)

    async def on(self) -> str:
        return await self._run("on", self._set("on", "on"))

    async def off(self) -> str:
        return await self._run("off", self._set("off", "off"))

    async def cycle(self) -> str:
        # An off chassis is powered on (a power cycle of it is refused by most BMCs).
        def cycle(cmd: Any) -> str:
            if cmd.get_power().get("powerstate") == "off":
                return self._set("cycle", "on")(cmd)
            # Chassis Control "power cycle" (0x02); pyghmi's set_power has no name for it.
            answer = cmd.raw_command(netfn=0x00, command=0x02, data=(0x02,))
            if answer.get("code"):
                raise _pyghmi()[1].IpmiException(answer.get("error") or "refused")
            return "chassis power cycle: accepted"

        return await self._run("cycle", cycle)

    async def reset(self) -> str:
        return await self._run("reset", self._set("reset", "reset"))

    async def set_next_boot_pxe(self) -> str:
        def pxe(cmd: Any) -> str:
            cmd.set_bootdev("network", persist=False)
            return "chassis bootdev pxe (next boot only)"

        return await self._run("next boot pxe", pxe)


def _forget_login(host: str, username: str, password: str, port: int) -> None:
    """Drop pyghmi's record of the login we just closed.

    pyghmi (1.6) can leave a finished login in its class-level table of logins in progress;
    the next Command to the same BMC then joins that dead login and hangs. Each call here
    logs in afresh, so the entry is never wanted after logout.
    """
    with contextlib.suppress(Exception):
        from pyghmi.ipmi.private import session

        session.Session.initting_sessions.pop((host, username, password, port, None), None)
