"""``kube_ssa``: the kmock API double with server-side apply (tests/apps/kube_ssa.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kube.kmock_server import KubeAPI, run_kube_api


@pytest.fixture
async def kube_ssa(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with run_kube_api(tmp_path, handler="tests.apps.kube_ssa:ApplyKubeAPI") as api:
        yield api
