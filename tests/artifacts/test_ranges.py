"""Range headers of artifact downloads (pure)."""

from __future__ import annotations

import pytest

from lab.errors import Invalid
from lab.labd.artifacts import RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, None),
        ("", None),
        ("bytes=0-", (0, 100)),
        ("bytes=10-19", (10, 20)),
        ("bytes=90-500", (90, 100)),
        ("bytes=-30", (70, 100)),
        ("bytes=-500", (0, 100)),
        ("items=0-5", None),
        ("bytes=0-5,10-20", None),
    ],
)
def test_ranges(header: str | None, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-200", "bytes=-0", "bytes=20-10"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(header, 100)
    assert exc.value.status == 416


@pytest.mark.parametrize("header", ["bytes=a-b", "bytes=", "bytes=-", "bytes=1-x"])
def test_malformed(header: str) -> None:
    with pytest.raises(Invalid):
        parse_range(header, 100)
