"""Whether a value read from YAML can be written out as JSON, and at what cost (pure).

YAML aliases make a value a graph: a few hundred bytes can stand for hundreds of millions of
strings (each alias written out again when the value is encoded), or for a value that contains
itself; and YAML has types JSON lacks (``!!binary``, timestamps, sets). :func:`json_problem`
walks the value as an encoder would, counting what it would write, and stops at the first
limit it meets, so a "billion laughs" is refused after ``max_size`` steps, never expanded.
"""

from __future__ import annotations

_SCALARS = (str, int, float, bool, type(None))


def json_problem(value: object, *, max_size: int, max_depth: int) -> str | None:
    """Why ``value`` should not be encoded as JSON, or None.

    Its size written out in full counts 1 per value and key plus the length of each string;
    past ``max_size`` the reason names aliases (only they make a value larger than the text it
    came from by much), past ``max_depth`` levels of nesting it names the depth (a value that
    contains itself is infinitely deep), and a value of another type than JSON's is named.
    """
    size = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"nests deeper than {max_depth} levels (or refers to itself)"
        size += 1 + (len(item) if isinstance(item, str) else 0)
        if size > max_size:
            return f"is larger than {max_size} once its aliases are expanded"
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, _SCALARS):
                    return f"has a key that is a {type(key).__name__}"
                size += 1 + (len(key) if isinstance(key, str) else 0)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif not isinstance(item, _SCALARS):
            return f"holds a {type(item).__name__}, which JSON has not (quote it)"
    return None
