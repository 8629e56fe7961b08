"""Label selectors: one grammar (lab.model.labels) for labd's list route and every -l."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from lab.errors import Invalid
from lab.model.labels import parse_selector, parse_selectors
from tests.cli.selector_table import EXTRA_NAME, FLEET, TABLE
from tests.labd.harness import running_labd
from tests.servers.cli import labctl, login_env


@pytest.mark.parametrize(("selectors", "expected"), TABLE, ids=lambda v: repr(v))
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
            for selectors, expected in TABLE:
                flags = [arg for s in selectors for arg in ("-l", s)]
                done = await labctl(env, "get", "servers", *flags, "-o", "name")
                assert done.returncode == 0, done.stderr
                assert names(done.stdout) == expected, selectors
                # A name beside the selector joins its matches, as server/NAME or NAME.
                for word in (EXTRA_NAME, f"server/{EXTRA_NAME}"):
                    done = await labctl(env, "get", "servers", word, *flags, "-o", "name")
                    assert names(done.stdout) == expected | {EXTRA_NAME}, (word, selectors)
                done = await labctl(
                    env, "label", f"server/{EXTRA_NAME}", *flags, "seen=yes", "-o", "json"
                )
                assert done.returncode == 0, done.stderr
                labeled = {i["name"] for i in json.loads(done.stdout)}
                assert labeled == expected | {EXTRA_NAME}, selectors
                done = await labctl(env, "label", *flags, "seen-", "-o", "name")
                assert names(done.stdout) == expected, selectors
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
