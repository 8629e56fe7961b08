"""A module archive is read by labd from whoever may install an app: can a small one make labd
hold gigabytes?

``tarfile`` reads a GNU long-name or a pax header whole, before labd sees the member it names,
so the archive must be refused by its decompressed size before tarfile reads it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
import tracemalloc
import zlib

import pytest

from lab.errors import Invalid
from lab.modules import from_archive

HUGE = 96 * 1024 * 1024  # decompressed bytes hidden in one header's data


def _header(name: bytes, typeflag: bytes, size: int) -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\x00"
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = f"{size:011o}\x00".encode()
    block[136:148] = b"00000000000\x00"
    block[156:157] = typeflag
    block[257:263] = b"ustar\x00"
    block[263:265] = b"00"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\x00 ".encode()
    return bytes(block)


def _gzip_stream(parts: list[bytes | int]) -> bytes:
    """A gzip of ``parts``: bytes as given, an int as that many zero bytes (streamed, so the
    test itself never holds the decompressed form)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [b""]
    zeros = bytes(1024 * 1024)
    for part in parts:
        if isinstance(part, bytes):
            out.append(packer.compress(part))
            continue
        left = part
        while left:
            n = min(left, len(zeros))
            out.append(packer.compress(zeros[:n]))
            left -= n
    out.append(packer.flush())
    return b"".join(out)


def _refused_within_bounds(data: bytes) -> str:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(Invalid) as caught:
            from_archive(data, hashlib.sha256(data).hexdigest(), source="bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"reading the archive took {peak} bytes of memory"
    assert time.monotonic() - started < 30
    return str(caught.value)


@pytest.mark.parametrize("typeflag", [b"L", b"x"], ids=["gnu-longname", "pax-header"])
def test_a_huge_header_in_a_small_archive_is_refused_unread(typeflag: bytes) -> None:
    module = b"name: probe\nversion: 0.1.0\n"
    data = _gzip_stream(
        [
            _header(b"././@LongLink", typeflag, HUGE),
            HUGE,
            _header(b"probe/module.yaml", b"0", len(module)),
            module + bytes(512 - len(module)),
            1024,
        ]
    )
    assert len(data) < 1024 * 1024  # fits in one labd request body
    message = _refused_within_bounds(data)
    assert "decompress" in message


def test_endless_directory_entries_are_refused() -> None:
    entry = _header(b"probe/d/", b"5", 0)
    data = _gzip_stream([entry * 40_000, 1024])
    message = _refused_within_bounds(data)
    assert "decompress" in message


def test_a_plain_module_archive_still_loads() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in {
            "probe/module.yaml": "name: probe\nversion: 0.1.0\n",
            "probe/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    data = raw.getvalue()
    module = from_archive(data, hashlib.sha256(data).hexdigest(), source="ok")
    assert module.spec.name == "probe"
    assert set(module.templates) == {"templates/cm.yaml"}
