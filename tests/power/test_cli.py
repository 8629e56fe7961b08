"""labctl power against a real labd and the IPMI simulator: set, status -o json, cycle with
--next-boot pxe, a wrong password's one line and exit code, and bulk -l with its summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from lab.client.credentials import Credentials as CliCredentials
from lab.client.credentials import save_credentials
from tests.labd.harness import running_labd
from tests.power.bmcs import PASSWORD, USER, bmc_said, ipmi_simulator

pytest.importorskip("pyghmi")
pytestmark = pytest.mark.skipif(shutil.which("ipmitool") is None, reason="needs ipmitool")


async def test_labctl_power(tmp_path: Path) -> None:
    with trio.fail_after(240), ipmi_simulator() as bmc:
        async with running_labd(tmp_path / "labd") as labd:
            admin = await labd.admin()
            token = await labd.create_token(admin, "agent", reusable=True)
            for name in ("node1", "node2"):
                await labd.enroll_agent(name, token, {"os": "linux"})
            home = tmp_path / "home"
            save_credentials(
                home,
                CliCredentials(
                    ca_pem=labd.ca_pem(), cert_pem=admin.cert_pem, key_pem=admin.key_pem
                ),
            )
            env = {
                **os.environ,
                "LABCTL_HOME": str(home),
                "LABCTL_CONFIG": str(home / "config.yaml"),
                "LABCTL_SERVER": labd.url,
            }

            async def labctl(*args: str) -> subprocess.CompletedProcess[bytes]:
                return await trio.run_process(
                    [sys.executable, "-m", "lab.cli.main", *args],
                    env=env, capture_stdout=True, capture_stderr=True, check=False,
                )  # fmt: skip

            good = tmp_path / "bmc.pass"
            good.write_text(PASSWORD + "\n")
            bad = tmp_path / "bad.pass"
            bad.write_text("wrong\n")
            common = ["--driver", "ipmi", "--host", "127.0.0.1", "--port", str(bmc.port)]
            done = await labctl("power", "set", "server/node1", *common,
                                "--username", USER, "--password-file", str(good))  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert PASSWORD not in done.stdout.decode()

            done = await labctl("power", "status", "server/node1", "-o", "json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {
                "target": "server/node1", "driver": "ipmi", "power": "off",
            }  # fmt: skip

            done = await labctl("power", "cycle", "server/node1", "--next-boot", "pxe")
            assert done.returncode == 0, done.stderr
            assert b"server/node1: cycle done, power on" in done.stdout

            # the label selector: node1 has a driver, node2 none -> one ok, one failed, exit 1
            async with labd.client(admin) as http:
                for name in ("node1", "node2"):
                    resp = await http.patch(
                        f"/api/servers/{name}/labels", json={"set": {"role": "worker"}}
                    )
                    assert resp.status_code == 200, resp.text
            done = await labctl("power", "off", "-l", "role=worker", "--parallel", "2")
            assert done.returncode == 1, done.stderr
            out = done.stdout.decode()
            assert "server/node1: off done, power off" in out
            assert "server/node2: error: server/node2 has no power driver" in out
            assert b"1 ok, 1 failed" in done.stderr

            # node2 gets the BMC with a wrong password: one line, exit 3, nothing changed
            done = await labctl("power", "set", "node2", *common,
                                "--username", USER, "--password-file", str(bad))  # fmt: skip
            assert done.returncode == 0, done.stderr
            done = await labctl("power", "on", "server/node2", "--next-boot", "pxe")
            assert done.returncode == 3, done.stderr
            lines = done.stderr.decode().strip().splitlines()
            assert len(lines) == 1 and "refused the credentials" in lines[0]
        assert bmc_said(bmc) == ["bootdev network", "power on", "power off"]
