"""One fleet and twelve selectors with the servers each must match: every command that takes
``-l`` (get, label, exec, logs) is checked against this same table."""

from __future__ import annotations

FLEET: dict[str, dict[str, str]] = {
    "a1": {"role": "db", "zone": "a"},
    "a2": {"role": "web", "zone": "a", "gpu": "yes"},
    "b1": {"role": "db", "zone": "b", "ssd": ""},
    "b2": {"role": "web", "zone": "b"},
    "c1": {},
    "c2": {"role": "cache", "tier": "x"},
}

# (the -l values, the servers they match)
TABLE: list[tuple[tuple[str, ...], set[str]]] = [
    (("role=db",), {"a1", "b1"}),
    (("role==web",), {"a2", "b2"}),
    (("zone!=a",), {"b1", "b2", "c1", "c2"}),
    (("role in (db,cache)",), {"a1", "b1", "c2"}),
    (("role notin (db,web)",), {"c1", "c2"}),
    (("gpu",), {"a2"}),
    (("!gpu",), {"a1", "b1", "b2", "c1", "c2"}),
    (("role=db,zone=b",), {"b1"}),
    (("zone in (a, b),!gpu,role!=web",), {"a1", "b1"}),
    (("ssd",), {"b1"}),
    ((" role = web , zone = b ",), {"b2"}),
    (("tier notin (x),role", "zone=a"), {"a1", "a2"}),
]

# A name given beside each selector: it joins the matches.
EXTRA_NAME = "c1"
