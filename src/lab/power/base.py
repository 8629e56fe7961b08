"""The driver protocol every power driver satisfies, and the one way to run an action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

import attrs
import trio

from lab.errors import Invalid, Unavailable

PowerState = Literal["on", "off", "unknown"]
PowerAction = Literal["status", "on", "off", "cycle", "reset"]
ACTIONS: tuple[PowerAction, ...] = ("status", "on", "off", "cycle", "reset")

T = TypeVar("T")


@attrs.frozen
class PowerResult:
    """What the BMC (or NIC, or agent) answered: the state seen and its own words."""

    driver: str
    action: str
    power: PowerState
    answer: str
    next_boot: str | None = None


class PowerDriver(Protocol):
    """One machine's power controller. Every method raises lab.errors on failure."""

    name: str

    async def status(self) -> PowerState: ...

    async def on(self) -> str: ...

    async def off(self) -> str: ...

    async def cycle(self) -> str: ...

    async def reset(self) -> str: ...

    async def set_next_boot_pxe(self) -> str: ...


async def in_thread(fn: Callable[[], T], *, deadline: float, what: str) -> T:
    """Run a blocking BMC call in a worker thread; Unavailable once ``deadline`` passes.

    The thread is abandoned at the deadline (the libraries have their own socket timeouts,
    set to the same deadline, so it ends soon after).
    """
    with trio.move_on_after(deadline) as scope:
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
    assert scope.cancelled_caught
    raise Unavailable(f"{what}: no answer within {deadline:g}s", details={"deadline": deadline})


async def run_action(
    driver: PowerDriver, action: str, *, next_boot_pxe: bool = False
) -> PowerResult:
    """Run ``action`` (status|on|off|cycle|reset) and report what the controller said."""
    if action not in ACTIONS:
        raise Invalid(
            f"unknown power action {action!r} (one of {', '.join(ACTIONS)})",
            details={"fields": ["action"]},
        )
    if next_boot_pxe and action not in ("on", "cycle", "reset"):
        raise Invalid(
            "--next-boot pxe goes with on, cycle or reset", details={"fields": ["next_boot"]}
        )
    answers: list[str] = []
    if next_boot_pxe:
        answers.append(await driver.set_next_boot_pxe())
    if action != "status":
        answers.append(await getattr(driver, action)())
    power = await driver.status()
    answers.append(f"power {power}")
    return PowerResult(
        driver=driver.name,
        action=action,
        power=power,
        answer="; ".join(answers),
        next_boot="pxe" if next_boot_pxe else None,
    )
