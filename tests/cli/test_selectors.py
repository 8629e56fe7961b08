"""Label selectors: one grammar (lab.model.labels) for labd's list route and every -l."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from lab.errors import Invalid
from lab.labd.relay import relay as streams
from lab.model.labels import parse_selector, parse_selectors
from tests.cli.selector_table import EXTRA_NAME, FLEET, TABLE
from tests.exec.fakehub import FakeHub
from tests.labd.harness import running_labd
from tests.servers.cli import labctl, login_env


def _id(value: object) -> str:
    """A test id that is the same in every process (a set's repr follows the hash seed)."""
    return repr(sorted(value)) if isinstance(value, set) else repr(value)


@pytest.mark.parametrize(("selectors", "expected"), TABLE, ids=_id)
def test_the_table_on_the_parser(selectors: tuple[str, ...], expected: set[str]) -> None:
    selector = parse_selectors(selectors)
    assert {name for name, labels in FLEET.items() if selector.matches(labels)} == expected
    # Printing and parsing again gives the same selector.
    assert parse_selector(str(selector)) == selector


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "it is empty"),
        ("a=1,,b=2", "an empty requirement"),
        ("a=1,", "an empty requirement"),
        ("role in (a", "'(' without ')'"),
        ("role in a)", "')' without '('"),
        ("role in ()", "in () needs at least one value"),
        ("role=a=b", "value 'a=b' is not valid"),
        ("bad key=x", "cannot read 'bad key=x'"),
        ("-role=x", "key '-role' is not valid"),
        ("role=not ok", "cannot read"),
        ("role in ((a))", "nested parentheses"),
        ("role >= 3", "cannot read"),
    ],
)
def test_malformed_selectors_say_why_in_the_users_words(text: str, why: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_selector(text)
    assert info.value.message.startswith(f"bad selector {text!r}: ")
    assert why in info.value.message
    assert info.value.details["hint"].startswith("e.g. -l ")


def names(stdout: str) -> set[str]:
    return {line.removeprefix("server/") for line in stdout.split()}


async def test_the_table_on_get_and_label_against_labd(tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent", reusable=True)
            async with labd.client(admin) as http:
                for name, labels in FLEET.items():
                    await labd.enroll_agent(name, token, {"os": "linux"})
                    if labels:
                        response = await http.patch(
                            f"/api/servers/{name}/labels", json={"set": labels, "remove": []}
                        )
                        assert response.status_code == 200, response.text
                # labd filters with the same grammar: ?selector= (repeated: ANDed).
                for selectors, expected in TABLE:
                    params = [("selector", s) for s in selectors]
                    items = (await http.get("/api/servers", params=params)).json()["items"]
                    assert {i["name"] for i in items} == expected, selectors
                bad = await http.get("/api/servers", params={"selector": "role in (a"})
                assert bad.status_code == 400
                assert bad.json()["error"]["message"] == (
                    "bad selector 'role in (a': '(' without ')'"
                )
            env = login_env(labd, admin, tmp_path / "home")
            await for_each_row(lambda selectors, expected: get_and_label(env, selectors, expected))
            # The same malformed selector fails the same way on get and label.
            for argv in (("get", "servers"), ("label", "role=x")):
                done = await labctl(env, *argv, "-l", "role in (a")
                assert done.returncode == 2
                assert done.stderr.splitlines()[0] == (
                    "error: bad selector 'role in (a': '(' without ')'"
                )
            # jsonpath on one server, TYPE/NAME and TYPE NAME forms.
            for argv in (("get", "server/a1"), ("get", "servers", "a1"), ("get", "server", "a1")):
                done = await labctl(env, *argv, "-o", "jsonpath={.name}")
                assert (done.returncode, done.stdout) == (0, "a1\n"), done.stderr


async def get_and_label(
    env: dict[str, str], selectors: tuple[str, ...], expected: set[str]
) -> None:
    flags = [arg for s in selectors for arg in ("-l", s)]
    done = await labctl(env, "get", "servers", *flags, "-o", "name")
    assert done.returncode == 0, done.stderr
    assert names(done.stdout) == expected, selectors
    # A name beside the selector joins its matches, as server/NAME or NAME.
    for word in (EXTRA_NAME, f"server/{EXTRA_NAME}"):
        done = await labctl(env, "get", "servers", word, *flags, "-o", "name")
        assert names(done.stdout) == expected | {EXTRA_NAME}, (word, selectors)
    done = await labctl(env, "label", f"server/{EXTRA_NAME}", *flags, "seen=yes", "-o", "json")
    assert done.returncode == 0, done.stderr
    labeled = {i["name"] for i in json.loads(done.stdout)}
    assert labeled == expected | {EXTRA_NAME}, selectors
    done = await labctl(env, "label", *flags, "seen-", "-o", "name")
    assert names(done.stdout) == expected, selectors


def listed_in_error(stderr: str) -> set[str]:
    """The servers named by "logs reads one server; N match: a, b"."""
    first = stderr.splitlines()[0]
    assert first.startswith("error: logs reads one server; "), stderr
    return set(first.split(" match: ", 1)[1].split(", "))


async def test_the_table_on_exec_and_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every server of the fleet online on a hub that runs commands and reads files here.
    source = tmp_path / "app.log"
    source.write_text("last line\n")
    hub = FakeHub(online=set(FLEET), sources={"app": source})
    monkeypatch.setattr(streams, "current_hub", lambda context: hub)
    with trio.fail_after(300):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent", reusable=True)
            async with labd.client(admin) as http:
                for name, labels in FLEET.items():
                    await labd.enroll_agent(name, token, {"os": "linux"})
                    if labels:
                        await http.patch(
                            f"/api/servers/{name}/labels", json={"set": labels, "remove": []}
                        )
            env = login_env(labd, admin, tmp_path / "home")
            await for_each_row(lambda selectors, expected: exec_and_logs(env, selectors, expected))
            # The malformed selector: the same line on exec and logs as on get and label.
            for argv in (("exec", "-l", "role in (a", "--", "true"), ("logs", "-l", "role in (a")):
                done = await labctl(env, *argv)
                assert done.returncode == 2
                assert done.stderr.splitlines()[0] == (
                    "error: bad selector 'role in (a': '(' without ')'"
                )
            # Names and the command stay apart: server/b2 after -l is a target, not the command.
            done = await labctl(env, "exec", "-l", "zone=a", "server/b2", "--", "echo", "hi")
            assert sorted(done.stdout.splitlines()) == ["a1 | hi", "a2 | hi", "b2 | hi"]
            assert done.stderr.splitlines()[-1] == "3 servers: 3 succeeded, 0 failed"
            # ... and server/x after -- is the command (both targets tried to run it).
            done = await labctl(env, "exec", "server/a1", "server/a2", "--", "server/x")
            assert done.stderr.splitlines()[-1] == "2 servers: 0 succeeded, 2 failed"
            assert done.stderr.count("'server/x'") == 2, done.stderr


async def exec_and_logs(
    env: dict[str, str], selectors: tuple[str, ...], expected: set[str]
) -> None:
    flags = [arg for s in selectors for arg in ("-l", s)]
    # exec: every match runs the command; a name before -- joins them.
    done = await labctl(env, "exec", *flags, f"server/{EXTRA_NAME}", "--", "echo", "hi")
    assert done.returncode == 0, done.stderr
    ran = {line.split(" | ")[0].strip() for line in done.stdout.splitlines()}
    assert ran == expected | {EXTRA_NAME}, selectors
    done = await labctl(env, "exec", *flags, "--", "echo", "hi")
    assert done.returncode == 0, (selectors, done.stderr)
    ran = {line.split(" | ")[0].strip() for line in done.stdout.splitlines()}
    assert ran == expected, (selectors, done.stderr)
    noun = "server" if len(expected) == 1 else "servers"
    summary = f"{len(expected)} {noun}: {len(expected)} succeeded, 0 failed"
    assert done.stderr.splitlines()[-1] == summary
    # logs reads exactly one server: the same matches, or an error naming them.
    done = await labctl(env, "logs", *flags, "--source", "app", "-n", "1")
    if len(expected) == 1:
        assert (done.returncode, done.stdout) == (0, "last line\n"), done.stderr
    else:
        assert done.returncode == 2, done.stderr
        assert listed_in_error(done.stderr) == expected, selectors
    done = await labctl(env, "logs", f"server/{EXTRA_NAME}", *flags, "--source", "app", "-n", "1")
    if expected <= {EXTRA_NAME}:
        assert done.returncode == 0, done.stderr
    else:
        assert listed_in_error(done.stderr) == expected | {EXTRA_NAME}, selectors


# The rows are independent (no selector reads the label the label checks write), so they run a
# few at a time: each labctl is a whole Python process, and one at a time cost over a minute.
ROWS_AT_ONCE = 3


async def for_each_row(
    check: Callable[[tuple[str, ...], set[str]], Awaitable[None]],
) -> None:
    limiter = trio.CapacityLimiter(ROWS_AT_ONCE)

    async def one(selectors: tuple[str, ...], expected: set[str]) -> None:
        async with limiter:
            await check(selectors, expected)

    async with trio.open_nursery() as nursery:
        for selectors, expected in TABLE:
            nursery.start_soon(one, selectors, expected)
