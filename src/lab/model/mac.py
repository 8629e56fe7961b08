"""MAC addresses, normalised at every boundary: any common spelling in, ``aa:bb:cc:dd:ee:ff``
out (the bastion's inventory, labctl provision)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from lab.errors import Invalid

_HEX12 = re.compile(r"[0-9a-f]{12}")
_SEPARATED = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
_CISCO = re.compile(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}")


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, details={"fields": [f"{message} @ {field}"]})


def normalize_mac(raw: object, *, field: str = "mac") -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` for any common spelling of a MAC address.

    Accepted: colon or dash separated, Cisco dotted (``aabb.ccdd.eeff``), bare hex, the PXE
    ``01-`` hardware-type prefix (as in ``pxelinux.cfg/01-aa-bb-…``) and URL-encoded forms
    (iPXE's ``${net0/mac}`` arrives as ``52%3A54%3A…``). Anything else raises Invalid.
    """
    if not isinstance(raw, str):
        raise _invalid(field, "a MAC address must be a string")
    text = unquote(raw.strip()).strip().lower()
    if len(text) > 32:
        raise _invalid(field, "not a MAC address")
    # PXE names files after "01-" + the dash-separated MAC: 01 is the ARP type of Ethernet.
    if len(text) == 20 and text.startswith("01-"):
        text = text[3:]
    if _SEPARATED.fullmatch(text) or _CISCO.fullmatch(text):
        digits = re.sub(r"[:.-]", "", text)
    elif _HEX12.fullmatch(text):
        digits = text
    else:
        raise _invalid(field, f"not a MAC address: {raw[:40]!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
