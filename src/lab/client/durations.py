"""Durations on the command line: ``30s``, ``10m``, ``1h``, ``7d`` (and combinations ``1h30m``)."""

from __future__ import annotations

import re

from lab.errors import Invalid

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")


def parse_duration(text: str, *, field: str = "duration") -> int:
    """Seconds in ``text``: one or more ``<integer><unit>`` parts, units ``s m h d w``.

    ``"90s"`` → 90, ``"1h30m"`` → 5400, ``"7d"`` → 604800. A bare number, an unknown unit,
    a negative or zero total, spaces or an empty string raise :class:`lab.errors.Invalid`
    naming ``field``.
    """
    value = text.strip().lower()
    if not _WHOLE.fullmatch(value):
        raise Invalid(
            f"{field} {text!r} is not a duration like 30s, 10m, 1h, 7d or 1h30m",
            details={"fields": [field], "reason": "bad_duration"},
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    if seconds <= 0:
        raise Invalid(
            f"{field} {text!r} must be longer than zero",
            details={"fields": [field], "reason": "bad_duration"},
        )
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: ``3d4h``, ``12m``, ``45s`` (two largest units, rounded down)."""
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return "".join(parts)
