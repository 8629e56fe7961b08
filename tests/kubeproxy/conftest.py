from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kube.kmock_server import KubeAPI, run_kube_api


@pytest.fixture
async def recording_api(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """kmock that remembers what reached it (tests.kubeproxy.recording)."""
    async with run_kube_api(tmp_path, handler="tests.kubeproxy.recording:RecordingKubeAPI") as api:
        yield api
