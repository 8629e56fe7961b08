"""The ``kube_api`` fixture: a Kubernetes API double (kmock) as its own process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kube.kmock_server import KubeAPI, run_kube_api


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with run_kube_api(tmp_path) as api:
        yield api
