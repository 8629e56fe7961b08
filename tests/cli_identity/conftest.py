"""Fixtures: a test CA, a private LABCTL_HOME, and the fake labd over TLS."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lab import pki
from tests.cli_identity.fake_labd import FakeLabd, serving


@pytest.fixture(scope="session")
def ca() -> pki.CAMaterial:
    return pki.create_ca("labctl identity test CA")


@pytest.fixture(scope="session")
def rogue_ca() -> pki.CAMaterial:
    return pki.create_ca("somebody else")


@pytest.fixture(autouse=True)
def labctl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for var in list(os.environ):
        if var.startswith(("LABCTL_", "LAB_AGENT_")):
            monkeypatch.delenv(var)
    home = tmp_path / "labctl-home"
    monkeypatch.setenv("LABCTL_HOME", str(home))
    yield home


@pytest.fixture
def fake(ca: pki.CAMaterial) -> FakeLabd:
    return FakeLabd(ca)


@pytest.fixture
async def url(fake: FakeLabd) -> AsyncIterator[str]:
    async with serving(fake) as base:
        yield base
