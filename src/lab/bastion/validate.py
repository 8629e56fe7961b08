"""Validation of everything that may end up inside an iPXE script or a kickstart.

Templates render with autoescape off (a kickstart is not HTML), so this module is the one gate:
a value that reaches a template has passed one of these functions. Each raises
:class:`lab.errors.Invalid` naming the field, which the API turns into a 400.
"""

from __future__ import annotations

import re
from typing import Any

from lab.errors import Invalid
from lab.model.mac import normalize_mac as normalize_mac  # re-exported: the bastion's checks
from lab.runtime.safetext import has_control

ROLES = ("worker", "infra")
LOCAL_BOOT_METHODS = ("exit", "sanboot")

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DISK = re.compile(r"/dev/(?:disk/by-[a-z]+/[A-Za-z0-9._:+@-]{1,200}|[a-z][a-z0-9]{1,30})")
_SSH_KEY = re.compile(
    r"(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|"
    r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
    r" [A-Za-z0-9+/]{16,8192}={0,3}(?: [A-Za-z0-9 ._@+:-]{0,200})?"
)


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, details={"fields": [f"{message} @ {field}"]})


def validate_hostname(raw: object, *, field: str = "hostname") -> str:
    """An RFC 1123 host name (labels of letters, digits and inner dashes), returned lowercase."""
    if not isinstance(raw, str) or not raw:
        raise _invalid(field, "a hostname is required")
    name = raw.lower()
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise _invalid(field, f"not an RFC 1123 hostname: {raw[:80]!r}")
    return name


def validate_role(raw: object, *, field: str = "role") -> str:
    if raw not in ROLES:
        raise _invalid(field, f"role must be one of {', '.join(ROLES)}")
    assert isinstance(raw, str)
    return raw


def validate_disk(raw: object, *, field: str = "disk") -> str:
    """A block device path: ``/dev/sda``, ``/dev/nvme0n1`` or ``/dev/disk/by-id/…``."""
    if not isinstance(raw, str) or not _DISK.fullmatch(raw) or ".." in raw:
        raise _invalid(field, "disk must be a device path like /dev/sda or /dev/disk/by-id/…")
    return raw


def validate_ssh_key(raw: object, *, field: str = "ssh_keys") -> str:
    """One OpenSSH public key line; no quotes or newlines can get through to ``sshkey``."""
    if not isinstance(raw, str) or not _SSH_KEY.fullmatch(raw.strip()):
        raise _invalid(field, "not an OpenSSH public key (type, base64 blob, optional comment)")
    return raw.strip()


def validate_local_boot(raw: object, *, field: str = "local_boot") -> str:
    if raw not in LOCAL_BOOT_METHODS:
        raise _invalid(field, f"local_boot must be one of {', '.join(LOCAL_BOOT_METHODS)}")
    assert isinstance(raw, str)
    return raw


_UNSAFE_TEXT = re.compile(r"[^A-Za-z0-9 ._,:/()@+=%-]")


def display_text(raw: str, *, limit: int = 200) -> str:
    """Free text (a progress message) made safe to print from an iPXE script or a shell.

    iPXE expands ``${…}`` and treats ``&&``/``||`` as operators; shells expand much more. Only a
    conservative set of characters survives; the rest become ``_``.
    """
    return _UNSAFE_TEXT.sub("_", raw[:limit])


INVENTORY_TEXT_LIMIT = 256
"""Longest string accepted anywhere in a discovery inventory (DMI strings are 64 bytes)."""


def validate_inventory_text(data: Any, *, field: str = "body") -> None:
    """Refuse an inventory string with control characters or of more than 256 characters.

    The inventory is posted by whoever runs the discovery script and is later logged and shown
    by ``labctl provision``: a newline in it would forge a log line, an ESC sequence would reach
    a terminal. Walks dicts and lists; raises Invalid naming the first bad field.
    """
    if isinstance(data, str):
        if has_control(data):
            raise _invalid(field, "control characters are not allowed")
        if len(data) > INVENTORY_TEXT_LIMIT:
            raise _invalid(field, f"longer than {INVENTORY_TEXT_LIMIT} characters")
    elif isinstance(data, dict):
        for key, value in data.items():
            validate_inventory_text(value, field=f"{field}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            validate_inventory_text(value, field=f"{field}[{i}]")
