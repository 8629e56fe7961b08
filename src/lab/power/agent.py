"""The enrolled agent as the power controller: it reboots or powers off its own node.

The driver does not know how labd reaches agents: labd hands it ``run`` (start argv on the
node through the ordinary exec path, return exit code and output) and ``online``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from lab.errors import Conflict, Unavailable
from lab.power.base import PowerState

Runner = Callable[[Sequence[str]], Awaitable[tuple[int, str]]]
Online = Callable[[], Awaitable[bool]]

REBOOT_ARGV: tuple[str, ...] = ("systemctl", "reboot")
POWEROFF_ARGV: tuple[str, ...] = ("systemctl", "poweroff")


class AgentDriver:
    name = "agent"

    def __init__(
        self,
        target: str,
        *,
        run: Runner,
        online: Online,
        reboot_argv: Sequence[str] = REBOOT_ARGV,
        poweroff_argv: Sequence[str] = POWEROFF_ARGV,
    ) -> None:
        self.target = target
        self._run = run
        self._online = online
        self.reboot_argv = tuple(reboot_argv)
        self.poweroff_argv = tuple(poweroff_argv)

    async def _exec(self, argv: Sequence[str]) -> str:
        if not await self._online():
            raise Unavailable(f"agent: {self.target} is not connected")
        code, output = await self._run(argv)
        said = " ".join(output.split())[:200]
        if code != 0:
            raise Conflict(
                f"agent: {' '.join(argv)} exited {code} on {self.target}"
                + (f": {said}" if said else "")
            )
        return f"{' '.join(argv)} ran on {self.target}" + (f": {said}" if said else "")

    async def status(self) -> PowerState:
        # A connected agent means a running node; a missing one says nothing for sure.
        return "on" if await self._online() else "unknown"

    async def on(self) -> str:
        if await self._online():
            return f"agent: {self.target} is already up"
        raise Conflict(f"agent: {self.target} is not connected; an agent cannot power its node on")

    async def off(self) -> str:
        return await self._exec(self.poweroff_argv)

    async def cycle(self) -> str:
        return await self._exec(self.reboot_argv)

    async def reset(self) -> str:
        return await self._exec(self.reboot_argv)

    async def set_next_boot_pxe(self) -> str:
        raise Conflict("agent: next boot pxe needs a BMC driver (redfish or ipmi)")
