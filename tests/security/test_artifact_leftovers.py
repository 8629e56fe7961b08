"""An upload cut by a labd that died (kill -9, power loss) leaves its temporary file behind,
up to ``artifacts_max_size`` each; nothing else would ever remove it. The next upload removes
temporary files nobody has written to for a day, and leaves recent ones (another replica's
upload in progress on the shared ``artifacts_dir``) alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from tests.labd.harness import running_labd


async def test_an_upload_sweeps_temporary_files_a_dead_labd_left(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            tmp_dir = labd.data_dir / "artifacts" / "tmp"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            stale = tmp_dir / "upload-0123456789abcdef"
            stale.write_bytes(b"x" * 4096)
            two_days_ago = time.time() - 2 * 86400
            os.utime(stale, (two_days_ago, two_days_ago))
            in_progress = tmp_dir / "upload-fedcba9876543210"
            in_progress.write_bytes(b"y")
            async with labd.client(admin) as http:
                resp = await http.put("/api/artifacts/tool/1.0/amd64", content=b"tool")
                assert resp.status_code == 201, resp.text
            assert sorted(p.name for p in tmp_dir.iterdir()) == [in_progress.name]
