"""HTTP ``Range: bytes=...`` for artifact downloads (RFC 9110 §14): one range, pure."""

from __future__ import annotations

from lab.errors import Invalid


class RangeNotSatisfiable(Invalid):
    """The range starts beyond the end of the content (416)."""

    status = 416
    code = "range_not_satisfiable"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single byte range, or None for the whole content
    (no header, another unit, several ranges: all may be answered with the whole content).

    Raises :class:`RangeNotSatisfiable` for a range that lies beyond ``size`` and
    :class:`Invalid` for a malformed one.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        raise Invalid(f"Range {header[:60]!r} is malformed", details={"fields": ["Range"]})
    if not first:  # bytes=-N: the last N bytes
        if not last.isdigit() or int(last) == 0:
            raise RangeNotSatisfiable(f"Range {header[:60]!r} selects nothing")
        return max(0, size - int(last)), size
    if not first.isdigit() or (last and not last.isdigit()):
        raise Invalid(f"Range {header[:60]!r} is malformed", details={"fields": ["Range"]})
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(
            f"Range {header[:60]!r} is beyond the content's {size} bytes",
            details={"size": size},
        )
    return start, end
