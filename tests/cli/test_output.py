"""Output formats without a server: table cells, -o name, -o jsonpath templates."""

from __future__ import annotations

import pytest

from lab.errors import Invalid
from lab.runtime.jsonpath import render
from lab.runtime.output import emit, table_lines

SERVERS = [
    {"name": "web1", "labels": {"role": "web"}, "load": [0.5, 0.25], "ok": True},
    {"name": "db1", "labels": {}, "load": [], "ok": False},
]


def test_table_cells_are_short() -> None:
    lines = table_lines([{"name": "a", "took": 3829.477069999939, "ok": True}], "table")
    assert lines == ["NAME  TOOK     OK", "a     3829.48  yes"]


@pytest.mark.parametrize(
    ("template", "data", "out"),
    [
        ("{.name}", SERVERS[0], "web1"),
        ("{.labels.role}", SERVERS[0], "web"),
        ("{.labels.zone}", SERVERS[0], ""),
        ("{.load[0]}", SERVERS[0], "0.5"),
        ("{.load[-1]}", SERVERS[0], "0.25"),
        ("{.load[*]}", SERVERS[0], "0.5 0.25"),
        ("{.ok}", SERVERS[1], "false"),
        ("{.items[*].name}", {"items": SERVERS}, "web1 db1"),
        (
            '{range .items[*]}{.name}{"\\t"}{.ok}{"\\n"}{end}',
            {"items": SERVERS},
            "web1\ttrue\ndb1\tfalse\n",
        ),
        ("name={.name}!", SERVERS[0], "name=web1!"),
        ("{.labels}", SERVERS[0], '{"role": "web"}'),
        ("{['name']}", SERVERS[0], "web1"),
    ],
)
def test_jsonpath(template: str, data: object, out: str) -> None:
    assert render(template, data) == out


@pytest.mark.parametrize(
    "template", ["{.name", "{end}", "{range .items[*]}{.name}", "{.a b}", '{"x}']
)
def test_bad_jsonpath_is_invalid(template: str) -> None:
    with pytest.raises(Invalid, match="jsonpath"):
        render(template, SERVERS[0])


def test_name_and_jsonpath_on_lists(capsys: pytest.CaptureFixture[str]) -> None:
    emit(SERVERS, "name", kind="server")
    emit(SERVERS, "jsonpath={.name}")
    emit(SERVERS, "jsonpath={.items[*].name}")
    assert capsys.readouterr().out == "server/web1\nserver/db1\nweb1\ndb1\nweb1 db1\n"
