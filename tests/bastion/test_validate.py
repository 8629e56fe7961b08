from __future__ import annotations

import pytest

from lab.bastion.validate import (
    display_text,
    normalize_mac,
    validate_disk,
    validate_hostname,
    validate_ssh_key,
)
from lab.errors import Invalid

SPELLINGS = [
    "52:54:00:ab:cd:ef",
    "52:54:00:AB:CD:EF",
    "52-54-00-AB-CD-EF",
    "5254.00ab.cdef",
    "525400abcdef",
    "01-52-54-00-ab-cd-ef",
    "52%3A54%3A00%3Aab%3Acd%3Aef",
    " 52:54:00:ab:cd:ef ",
]

BAD_MACS = [
    "",
    "52:54:00:ab:cd",
    "52:54:00:ab:cd:ef:00",
    "52:54-00:ab:cd:ef",
    "zz:54:00:ab:cd:ef",
    "525400abcde",
    "02-52-54-00-ab-cd-ef",
    "52:54:00:ab:cd:ef;reboot",
    "${net0/mac}",
    "x" * 500,
]


@pytest.mark.parametrize("raw", SPELLINGS)
def test_every_common_mac_spelling_normalises_to_one_form(raw: str) -> None:
    assert normalize_mac(raw) == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize("raw", BAD_MACS)
def test_anything_else_is_invalid_and_names_the_field(raw: str) -> None:
    with pytest.raises(Invalid) as info:
        normalize_mac(raw, field="body.mac")
    assert info.value.details["fields"][0].endswith("@ body.mac")


def test_non_string_mac_is_invalid() -> None:
    with pytest.raises(Invalid):
        normalize_mac(525400)


@pytest.mark.parametrize("name", ["node1", "Web-01", "a", "k3s.lab.example", "x" * 63])
def test_rfc1123_hostnames_pass(name: str) -> None:
    assert validate_hostname(name) == name.lower()


@pytest.mark.parametrize(
    "name", ["", "-web", "web-", "we_b", "web;reboot", "a..b", "x" * 64, "web 1", "wéb", "a$b"]
)
def test_bad_hostnames_are_invalid(name: str) -> None:
    with pytest.raises(Invalid):
        validate_hostname(name)


@pytest.mark.parametrize(
    "disk", ["/dev/sda", "/dev/nvme0n1", "/dev/vda", "/dev/disk/by-id/ata-X_1"]
)
def test_disk_paths(disk: str) -> None:
    assert validate_disk(disk) == disk


@pytest.mark.parametrize(
    "disk", ["sda", "/dev/", "/dev/sda; rm -rf /", "/dev/../etc/passwd", "/tmp/x", "/dev/sd a"]
)
def test_bad_disks(disk: str) -> None:
    with pytest.raises(Invalid):
        validate_disk(disk)


def test_ssh_keys_refuse_quotes_and_newlines() -> None:
    good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@x"
    assert validate_ssh_key(good) == good
    for bad in [good + '"', good + "\nrootpw x", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "hello"]:
        with pytest.raises(Invalid):
            validate_ssh_key(bad)


def test_display_text_strips_what_ipxe_or_a_shell_would_expand() -> None:
    assert display_text('disk ${net0/mac} && "x" `id`') == "disk __net0/mac_ __ _x_ _id_"
