"""labctl provision install … --power-cycle: the bastion queues the install, then labd sets
the machine's next boot to PXE (once) and power-cycles it through its IPMI driver; audited."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from tests.bastion.test_cli import _free_port, _run
from tests.labd.harness import running_labd
from tests.power.bmcs import PASSWORD, USER, bmc_said, ipmi_simulator
from tests.servers.seam import audit_entries

pytest.importorskip("pyghmi")
pytestmark = pytest.mark.skipif(shutil.which("ipmitool") is None, reason="needs ipmitool")
MAC = "52:54:00:12:34:56"


@pytest.fixture
def bastion(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "LAB_BASTION_DATA_DIR": str(tmp_path / "bastion"),
        "LAB_BASTION_PORT": str(port),
        "LAB_BASTION_HOST": "127.0.0.1",
        "LABCTL_BASTION_URL": f"http://127.0.0.1:{port}",
    }
    started = _run("lab.cli.init_bastion:bastion_app", "standalone", "start", "--no-dhcp", env=env)
    try:
        assert started.returncode == 0, started.stderr
        yield env
    finally:
        _run("lab.cli.init_bastion:bastion_app", "standalone", "stop", env=env)


async def test_install_with_power_cycle(bastion: dict[str, str], tmp_path: Path) -> None:
    with trio.fail_after(180), ipmi_simulator() as bmc:
        async with running_labd(tmp_path / "labd") as labd:
            admin = await labd.admin()
            home = tmp_path / "home"
            save_credentials(
                home,
                CliCredentials(
                    ca_pem=labd.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem
                ),
            )
            env = {
                **bastion,
                "LABCTL_HOME": str(home),
                "LABCTL_CONFIG": str(home / "config.yaml"),
                "LABCTL_SERVER": labd.url,
            }
            async with labd.client(admin) as http:
                resp = await http.put(
                    f"/api/power/machine/{MAC}",
                    json={
                        "driver": "ipmi",
                        "settings": {"host": "127.0.0.1", "port": bmc.port, "username": USER},
                        "password": PASSWORD,
                    },
                )
                assert resp.status_code == 200, resp.text
            done = await trio.run_process(
                [sys.executable, "-m", "lab.cli.main", "provision", "install", MAC, "node1",
                 "--power-cycle"],
                env=env, capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            out = done.stdout.decode()
            assert done.returncode == 0, done.stderr
            assert "queued" in out
            assert f"machine/{MAC}: next boot pxe, power cycled (ipmi:" in out
            (entry,) = await audit_entries(labd, "power:cycle")
            assert entry.resource == f"machine/{MAC}"
            assert entry.details["driver"] == "ipmi" and entry.details["next_boot"] == "pxe"
        assert bmc_said(bmc) == ["bootdev network", "power on"]
