from __future__ import annotations

import pytest
from agent_exec_helpers import Peer


@pytest.fixture
def peer() -> Peer:
    return Peer()
