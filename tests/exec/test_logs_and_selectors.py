"""labctl logs over /ws/logs, tty exec and label-selected fan-out."""

from __future__ import annotations

import trio

from lab.client.wsclient import StreamSession, StreamState
from lab.proto import Channel
from tests.exec.conftest import Lab


async def test_logs_follow_delivers_an_appended_line(lab: Lab) -> None:
    source = lab.tmp / "app.log"
    source.write_text("first\nsecond\n")
    lab.hub.sources["app"] = source
    lines: list[bytes] = []
    got_line = trio.Event()

    async def sink(_: StreamState, channel: Channel, payload: bytes) -> None:
        assert channel == Channel.LOG
        lines.append(payload)
        got_line.set()

    with trio.fail_after(15):
        async with lab.connect("/ws/logs") as ws:
            session = StreamSession(ws)
            params = {"targets": ["alpha"], "start": {"source": "app", "lines": 1, "follow": True}}
            await session.open("logs", params)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run, sink)
                await got_line.wait()
                assert lines == [b"second"]
                got_line = trio.Event()
                with source.open("a") as fh:
                    fh.write("appended\n")
                await got_line.wait()
                nursery.cancel_scope.cancel()
    assert lines == [b"second", b"appended"]
    (entry,) = lab.audit("logs:read")[:1]
    assert entry["result"] == "success" and entry["resource"] == "server/alpha"


async def test_logs_command_prints_lines_and_unknown_source_fails(lab: Lab) -> None:
    source = lab.tmp / "app.log"
    source.write_text("a\nb\nc\n")
    lab.hub.sources["app"] = source
    with trio.fail_after(30):
        ok = await trio.run_process(
            lab.labctl("logs", "server/alpha", "--source", "app", "-n", "2"),
            env=lab.env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        missing = await trio.run_process(
            lab.labctl("logs", "server/alpha", "--source", "nope"),
            env=lab.env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"b\nc\n"
    assert missing.returncode == 4
    assert b"no log source 'nope'" in missing.stderr


async def test_viewer_may_not_read_logs(lab: Lab) -> None:
    home, _ = await lab.user_home("vic", ["viewer"])
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl("logs", "server/alpha", "--source", "app"),
            env=lab.env(home),
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 3
    assert lab.audit("logs:read")[-1]["result"] == "denied"


async def test_tty_merges_output_on_a_terminal(lab: Lab) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl("exec", "-t", "server/alpha", "--", "sh", "-c", "tty; echo err >&2"),
            env=lab.env(),
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith("/dev/pts/")
    assert "err\r\n" in out
    assert result.stderr == b""


async def test_label_selector_fans_out(lab: Lab) -> None:
    async with lab.labd.client(lab.admin) as http:
        for name in ("alpha", "beta"):
            resp = await http.patch(f"/api/servers/{name}/labels", json={"set": {"role": "worker"}})
            assert resp.status_code == 200, resp.text
    with trio.fail_after(30):
        result = await trio.run_process(
            lab.labctl("exec", "-l", "role=worker", "--", "echo", "hi"),
            env=lab.env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        nomatch = await trio.run_process(
            lab.labctl("exec", "-l", "role=none", "--", "echo", "hi"),
            env=lab.env(),
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.decode().splitlines()) == ["alpha | hi", "beta  | hi"]
    assert "2 servers: 2 succeeded, 0 failed" in result.stderr.decode()
    assert nomatch.returncode == 4
    assert b"no server matches role=none" in nomatch.stderr
