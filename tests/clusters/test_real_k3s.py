"""create, upgrade and delete against a real k3s, when one is on PATH (marker ``k3s``).

This machine is the one node: a real lab-agent runs the steps with the real systemctl and
writes the real paths (/usr/local/bin/k3s, /etc/rancher/k3s, /var/lib/rancher/k3s), so run it
only on a throwaway machine. ``LAB_TEST_K3S_NEXT`` may name a second k3s binary to upgrade
to; without it the upgrade re-runs the same version (cordon, drain, restart, uncordon).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from tests.clusters.rig import cluster_lab

K3S = shutil.which("k3s")
pytestmark = [
    pytest.mark.k3s,
    pytest.mark.skipif(K3S is None, reason="no k3s on PATH: the real-k3s run needs one"),
]


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, check=True, text=True)
    match = re.search(r"v\d+\.\d+\.\d+\+k3s\d+", out.stdout)
    assert match is not None, out.stdout
    return match[0]


async def test_create_upgrade_delete_against_real_k3s(tmp_path: Path) -> None:
    assert K3S is not None
    first = _version(K3S)
    nxt = os.environ.get("LAB_TEST_K3S_NEXT") or K3S
    second = _version(nxt)
    with trio.fail_after(900):
        async with cluster_lab(
            tmp_path, ["k3s-node"], standins=False, cluster_ready_timeout=600.0
        ) as lab:
            await lab.add_artifact("k3s", first, "amd64", Path(K3S).read_bytes())
            await lab.add_artifact("k3s", second, "amd64", Path(nxt).read_bytes())
            done = await lab.labctl(
                "clusters", "create", "real", "--server", "server/k3s-node", "--version", first,
                "--api-address", "127.0.0.1",
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            got = json.loads((await lab.labctl("get", "clusters", "-o", "json")).stdout)
            assert [c["status"] for c in got] == ["ready"]
            done = await lab.labctl("clusters", "upgrade", "real", "--version", second)
            assert done.returncode == 0, done.stdout + done.stderr
            done = await lab.labctl("clusters", "delete", "real")
            assert done.returncode == 0, done.stdout + done.stderr
            assert not Path("/usr/local/bin/k3s").exists()
