"""labd renders a module off its event loop, under a deadline: a template that loops for long
is refused, and labd keeps serving meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from lab.errors import Invalid
from lab.labd.apps import rendering
from lab.modules import Cluster, Release, load_directory


async def test_a_slow_template_is_refused_and_the_loop_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "slow"
    (root / "templates").mkdir(parents=True)
    (root / "module.yaml").write_text("name: slow\nversion: 0.1.0\n")
    # A silent loop: no output (the size cap never trips), slow work in each of its steps,
    # fewer steps than the render's step budget (lab.modules.render.MAX_STEPS).
    (root / "templates" / "cm.yaml").write_text(
        "{% for i in 'x' * 50000 %}{% set s = ('x' * 90000)|replace('x', 'yy') %}{% endfor %}"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"
    )
    module = load_directory(root)
    monkeypatch.setattr(rendering, "RENDER_TIMEOUT", 0.3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.02)
            ticks += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            with pytest.raises(Invalid, match=r"rendering took more than 0\.3s"):
                await rendering.render_off_loop(
                    module,
                    {},
                    release=Release(name="a", namespace="b", revision=1),
                    cluster=Cluster(name="c"),
                )
            nursery.cancel_scope.cancel()
    assert ticks >= 5  # the event loop ran while the template looped
