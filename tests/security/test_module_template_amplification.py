"""One short expression in a module template must not make labd build gigabytes.

The output cap stops a template that *writes* without end, but a single value can be built
far larger than the cap before anything is written: ``replace`` and ``join`` multiply a
string's length, a ``%`` format can ask for a width of a billion, and ``**`` on a large base
builds an enormous integer. Each is refused when it would exceed the cap, before it is built;
and a template that divides by zero or converts a non-number is a 400 naming the template,
not a 500.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from lab.errors import Invalid
from lab.modules import Cluster, Release, check_values, load_directory, render


def render_expression(tmp_path: Path, expression: str) -> list[object]:
    root = tmp_path / "probe"
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "module.yaml").write_text("name: probe\nversion: 0.1.0\n")
    (root / "templates" / "cm.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  x: {expression}\n"
    )
    module = load_directory(root)
    out = render(
        module,
        check_values(module.spec.parameters, {}),
        release=Release(name="web", namespace="apps", revision=1),
        cluster=Cluster(name="c1", version="1.31.0"),
    )
    return list(out.objects)


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ('x' * 100000)|replace('x', 'y' * 2000) }}",
        "{{ ('x' * 100000)|list|join('y' * 2000) }}",
        "{{ '%050000000d' % 1 }}",
        "{{ '%.50000000f' % 1.5 }}",
        "{{ '%*d' % (50000000, 1) }}",
        "{{ (((2 ** 64) ** 64) ** 64) ** 64 }}",
    ],
    ids=["replace", "join", "width", "precision", "star-width", "power"],
)
def test_a_value_past_the_cap_is_refused_before_it_is_built(
    tmp_path: Path, expression: str
) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(Invalid, match="too large") as caught:
            render_expression(tmp_path, expression)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.details["fields"] == ["templates/cm.yaml"]
    assert peak < 48 * 1024 * 1024, f"{peak} bytes built"
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("{{ 'a-b'|replace('-', '_') }}", "a_b"),
        ("{{ ['a', 'b']|join(',') }}", "a,b"),
        ("{{ '%05d' % 42 }}", "00042"),
        ("{{ '%s-%s' % ('a', 'b') }}", "a-b"),
        ("{{ 2 ** 10 }}", 1024),
        ("{{ 7 % 3 }}", 1),
    ],
)
def test_ordinary_uses_still_render(tmp_path: Path, expression: str, value: object) -> None:
    (obj,) = render_expression(tmp_path, expression)
    assert isinstance(obj, dict)
    assert obj["data"]["x"] == value


@pytest.mark.parametrize(
    "expression",
    [
        "{{ 1 / 0 }}",
        "{{ 'a' - 1 }}",
        "{{ '%d' % 'x' }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    ],
)
def test_a_python_error_in_a_template_is_a_400(tmp_path: Path, expression: str) -> None:
    with pytest.raises(Invalid) as caught:
        render_expression(tmp_path, expression)
    assert caught.value.details["fields"] == ["templates/cm.yaml"]


@pytest.mark.parametrize(
    "expression",
    [
        "{% set a = 'x' * 100000 %}{% set b = a ~ a ~ a ~ a %}{% set c = b ~ b ~ b ~ b %}"
        "{% set d = c ~ c ~ c ~ c %}{{ (d ~ d ~ d ~ d)|length }}",
        "{% set a = 'x' * 100000 %}{% set b = a + a + a + a %}{% set c = b + b + b + b %}"
        "{% set d = c + c + c + c %}{{ (d + d + d + d)|length }}",
        "{{ (['x' * 100000] * 100000)|length }}{{ ['x' * 100000] * 1000 }}",
        "{{ (['x' * 100000] * 100000)|string|length }}",
        "{{ ('x' * 100000)" + "|b64encode" * 14 + " }}",
    ],
    ids=["concat-doubling", "plus-doubling", "list-of-references", "string", "b64-chain"],
)
def test_building_by_repetition_is_refused(tmp_path: Path, expression: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(Invalid, match="too large"):
            render_expression(tmp_path, expression)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 * 1024 * 1024, f"{peak} bytes built"


def test_a_loop_that_writes_nothing_stops_at_the_step_budget(tmp_path: Path) -> None:
    """Rendering runs in a worker thread that a deadline abandons but cannot stop: a loop
    must end by itself, or it would spin in labd for hours."""
    started = time.monotonic()
    loops = "{% for i in 'x' * 100000 %}{% for j in 'y' * 100000 %}{% endfor %}{% endfor %}"
    with pytest.raises(Invalid, match="loop steps"):
        render_expression(tmp_path, loops + "ok")
    assert time.monotonic() - started < 20
