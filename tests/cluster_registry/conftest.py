"""The Kubernetes API double (kmock, its own process) for the cluster registry's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kube.kmock_server import KubeAPI, run_kube_api


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with run_kube_api(tmp_path) as api:
        yield api
