"""Range headers a careless or hostile client sends to an artifact download: every one is
answered with a 2xx or a 4xx (never a 500), and every 206 names a range that exists."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.labd.harness import running_labd

KEY = "/api/artifacts/tool/1.0/amd64"
EMPTY = "/api/artifacts/empty/1.0/amd64"
CONTENT = bytes(range(256)) * 4


async def test_hostile_ranges_get_an_answer_of_the_clients_making(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_labd(tmp_path) as labd:
            admin = await labd.admin()
            async with labd.client(admin) as http:
                assert (await http.put(KEY, content=CONTENT)).status_code == 201
                assert (await http.put(EMPTY, content=b"")).status_code == 201
                cases = {
                    # more digits than Python turns into an int by default
                    "bytes=" + "9" * 5000 + "-": 416,
                    "bytes=0-" + "9" * 5000: 206,
                    "bytes=-" + "9" * 5000: 206,
                    "bytes=\u0661-": 400,  # an Arabic-Indic digit one
                    "bytes=-1-2": 400,
                    "bytes=5-2": 416,
                    "bytes=1024-": 416,
                    "bytes=0-1,5-6": 200,
                    "bytes=1020-": 206,
                }
                for header, status in cases.items():
                    got = await http.get(
                        KEY + "/content", headers=[(b"range", header.encode("utf-8"))]
                    )
                    assert got.status_code == status, (header[:20], got.text[:200])
                    if status == 206:
                        first, _, rest = got.headers["Content-Range"][6:].partition("-")
                        last, _, size = rest.partition("/")
                        assert int(size) == len(CONTENT)
                        assert got.content == CONTENT[int(first) : int(last) + 1]
                for header in ("bytes=-5", "bytes=0-", "bytes=0-0"):
                    got = await http.get(EMPTY + "/content", headers={"Range": header})
                    assert got.status_code == 416, (header, got.headers.get("Content-Range"))
                assert (await http.get(EMPTY + "/content")).content == b""
