"""HTTP ``Range: bytes=...`` for artifact downloads (RFC 9110 §14): one range, pure."""

from __future__ import annotations

import re

from lab.errors import Invalid

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_HUGE = 10**18


class RangeNotSatisfiable(Invalid):
    """The range starts beyond the end of the content (416)."""

    status = 416
    code = "range_not_satisfiable"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single byte range, or None for the whole content
    (no header, another unit, several ranges: all may be answered with the whole content).

    Raises :class:`RangeNotSatisfiable` for a range that lies beyond ``size`` (any range of
    empty content) and :class:`Invalid` for a malformed one (digits are ASCII only).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _SPEC.fullmatch(spec.strip())
    if match is None or not (match[1] or match[2]):
        raise Invalid(f"Range {header[:60]!r} is malformed", details={"fields": ["Range"]})
    first, last = _number(match[1]), _number(match[2])
    if first is None:  # bytes=-N: the last N bytes
        if not last or not size:
            raise RangeNotSatisfiable(f"Range {header[:60]!r} selects nothing")
        return max(0, size - last), size
    if first >= size or (last is not None and last < first):
        raise RangeNotSatisfiable(
            f"Range {header[:60]!r} is beyond the content's {size} bytes",
            details={"size": size},
        )
    return first, size if last is None else min(last + 1, size)


def _number(digits: str) -> int | None:
    """The value of ASCII ``digits`` (None when empty); past 18 digits, a number larger than
    any file (``int()`` refuses strings of thousands of digits)."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _HUGE
