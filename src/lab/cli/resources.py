"""``TYPE/NAME`` resources on the command line (``server/web1``), parsed in one place."""

from __future__ import annotations

from lab.errors import Invalid

# Canonical type -> the spellings accepted for it (kubectl accepts singular and plural).
RESOURCE_TYPES: dict[str, tuple[str, ...]] = {
    "server": ("server", "servers"),
    "cluster": ("cluster", "clusters"),
}


def parse_resource(text: str, *, allowed: tuple[str, ...] | None = None) -> tuple[str, str]:
    """``(type, name)`` from ``TYPE/NAME``, the type in its canonical spelling.

    ``allowed`` narrows the accepted types for a command (default: every known type).
    Raises :class:`Invalid` for a missing part or an unknown type; the hint lists the valid
    types.
    """
    valid = allowed if allowed is not None else tuple(RESOURCE_TYPES)
    hint = "valid types: " + ", ".join(f"{t}/NAME" for t in valid)
    kind, slash, name = text.partition("/")
    if not slash or not kind or not name or "/" in name:
        raise Invalid(
            f"resource {text!r} must be TYPE/NAME",
            details={"fields": ["resource"], "hint": hint},
        )
    lowered = kind.lower()
    for canonical in valid:
        if lowered in RESOURCE_TYPES.get(canonical, (canonical,)):
            return canonical, name
    raise Invalid(
        f"unknown resource type {kind!r}",
        details={"fields": ["resource"], "hint": hint},
    )
