"""labctl logs bastion as a process against an in-process bastion."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.bastion.conftest import Running, start_bastion

LABCTL = [sys.executable, "-m", "lab.cli.main"]


@pytest.fixture
async def bastion(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    logger = logging.getLogger("lab")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async for running in start_bastion(nursery, tmp_path):
            yield running
    finally:
        logger.setLevel(level)


def env_for(bastion: Running, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "LAB_", "LABD_"))}
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "config.yaml").write_text(f"bastion: {bastion.url}\n")
    env.update(
        LABCTL_HOME=str(tmp_path / "home"),
        LABCTL_BASTION_TOKEN_FILE=str(bastion.data_dir / "admin-token"),
    )
    return env


async def test_last_lines_then_follow_until_the_bastion_stops(
    bastion: Running, tmp_path: Path
) -> None:
    env = env_for(bastion, tmp_path)
    with trio.fail_after(30):
        await bastion.client.get("/dispatch", params={"mac": "02:00:00:00:00:01"})
        done = await trio.run_process(
            [*LABCTL, "logs", "bastion", "-n", "1"], env=env, capture_stdout=True
        )
        out = done.stdout.decode().splitlines()
        assert len(out) == 1 and "INFO lab.bastion: [rid=" in out[0], out
        assert out[0].endswith("dispatch 02:00:00:00:00:01 (unknown)")

        proc = await trio.lowlevel.open_process(
            [*LABCTL, "logs", "bastion", "-f", "-n", "0"], env=env, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            seen = b""
            # Ask again until the follower is subscribed and prints the new dispatch line.
            while b"dispatch 02:00:00:00:00:02" not in seen:
                await bastion.client.get("/dispatch", params={"mac": "02:00:00:00:00:02"})
                with trio.move_on_after(0.5):
                    seen += await proc.stdout.receive_some()
            bastion.shutdown.set()
            async for chunk in proc.stdout:
                seen += chunk
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stdout.aclose()
        assert proc.returncode == 0


async def test_a_wrong_token_is_one_line_and_exit_3(bastion: Running, tmp_path: Path) -> None:
    env = env_for(bastion, tmp_path)
    (tmp_path / "wrong").write_text("nope\n")
    env["LABCTL_BASTION_TOKEN_FILE"] = str(tmp_path / "wrong")
    with trio.fail_after(30):
        done = await trio.run_process(
            [*LABCTL, "logs", "bastion"], env=env, capture_stderr=True, check=False
        )
    assert done.returncode == 3
    assert done.stderr.decode().startswith("error: admin token missing or wrong")
