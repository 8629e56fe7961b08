"""The agent driver's verbs without a daemon: which argv each verb runs on the node, and what
it says when the agent is away or the command fails (tests/power/test_agent.py runs it
through labd and a real lab-agent)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lab.errors import Conflict, Unavailable
from lab.power.agent import POWEROFF_ARGV, REBOOT_ARGV, AgentDriver


class Node:
    def __init__(self, *, online: bool = True, code: int = 0, output: str = "") -> None:
        self.up = online
        self.code = code
        self.output = output
        self.ran: list[tuple[str, ...]] = []

    async def run(self, argv: Sequence[str]) -> tuple[int, str]:
        self.ran.append(tuple(argv))
        return self.code, self.output

    async def online(self) -> bool:
        return self.up


def driver(node: Node, **argvs: Sequence[str]) -> AgentDriver:
    return AgentDriver("server/n1", run=node.run, online=node.online, **argvs)


@pytest.mark.parametrize(
    ("verb", "argv"), [("off", POWEROFF_ARGV), ("cycle", REBOOT_ARGV), ("reset", REBOOT_ARGV)]
)
async def test_each_verb_runs_its_argv_once(verb: str, argv: tuple[str, ...]) -> None:
    node = Node(output="  going\n down  ")
    said = await getattr(driver(node), verb)()
    assert node.ran == [argv]
    assert said == f"{' '.join(argv)} ran on server/n1: going down"


async def test_configured_argvs_replace_the_defaults() -> None:
    node = Node()
    drv = driver(node, reboot_argv=["/sbin/reboot", "-f"], poweroff_argv=["/sbin/halt"])
    assert await drv.reset() == "/sbin/reboot -f ran on server/n1"
    await drv.off()
    assert node.ran == [("/sbin/reboot", "-f"), ("/sbin/halt",)]


async def test_a_failing_command_is_a_conflict_naming_the_code_and_output() -> None:
    node = Node(code=1, output="x" * 300)
    with pytest.raises(Conflict) as refused:
        await driver(node).reset()
    assert refused.value.message == f"agent: systemctl reboot exited 1 on server/n1: {'x' * 200}"
    with pytest.raises(Conflict, match=r"exited 3 on server/n1$"):
        await driver(Node(code=3)).cycle()


@pytest.mark.parametrize("verb", ["off", "cycle", "reset"])
async def test_an_absent_agent_is_unavailable_and_nothing_runs(verb: str) -> None:
    node = Node(online=False)
    with pytest.raises(Unavailable, match="server/n1 is not connected"):
        await getattr(driver(node), verb)()
    assert node.ran == []


async def test_status_and_on_follow_the_session() -> None:
    up, down = Node(), Node(online=False)
    assert await driver(up).status() == "on"
    assert await driver(down).status() == "unknown"
    assert await driver(up).on() == "agent: server/n1 is already up"
    with pytest.raises(Conflict, match="cannot power its node on"):
        await driver(down).on()
    with pytest.raises(Conflict, match="needs a BMC driver"):
        await driver(up).set_next_boot_pxe()
    assert up.ran == down.ran == []
