"""labctl init labd standalone start/status/stop with real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

from tests.e2e.procs import clean_env, free_port, labctl, pid_alive, run


def test_start_status_stop(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        LABD_DATA_DIR=str(tmp_path / "data"),
        LABD_PORT=str(port),
        LABD_HOST="127.0.0.1",
        LABCTL_HOME=str(tmp_path / "home"),
    )
    pid = None
    try:
        started = labctl("init", "labd", "standalone", "start", "--wait", "60", env=env)
        assert started.returncode == 0, started.stderr
        status = json.loads(
            labctl("init", "labd", "standalone", "status", "-o", "json", env=env).stdout
        )
        assert status["running"] is True and status["healthy"] is True
        assert status["url"] == f"https://127.0.0.1:{port}"
        pid = status["pid"]
        assert pid_alive(pid)
        line = labctl("init", "labd", "standalone", "status", env=env).stdout
        assert line == f"labd running (pid {pid}) at https://127.0.0.1:{port}, healthy\n"
        assert (tmp_path / "data" / "labd.db").exists()

        # The first start logged this user in as admin with the bootstrap token.
        assert "logged in" in started.stdout
        assert not (tmp_path / "data" / "bootstrap-token").exists()
        who = labctl("whoami", "-o", "json", env=env)
        assert who.returncode == 0, who.stderr
        assert "admin" in json.loads(who.stdout)["roles"]
        anonymous = (
            run(["curl", "-sk", f"https://127.0.0.1:{port}/api/tokens"], env)
            if shutil.which("curl")
            else None
        )
        if anonymous is not None:
            assert '"unauthenticated"' in anonymous.stdout

        again = labctl("init", "labd", "standalone", "start", env=env)
        assert again.returncode != 0
        assert "already running" in again.stderr

        stopped = labctl("init", "labd", "standalone", "stop", env=env)
        assert stopped.returncode == 0
        assert not pid_alive(pid)
        status = json.loads(
            labctl("init", "labd", "standalone", "status", "-o", "json", env=env).stdout
        )
        assert status == {"running": False, "pid": None, "url": status["url"], "healthy": False}
    finally:
        # Whatever failed, leave no labd behind: the pid file names it even when start timed out.
        pid_file = tmp_path / "data" / "labd.pid"
        if pid is None and pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_refuses_a_database_from_a_newer_schema(tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "labd.db")
    db.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
    )
    db.execute("INSERT INTO schema_migrations VALUES (9999, 'future', '2030-01-01T00:00:00+00:00')")
    db.commit()
    db.close()
    before = (data / "labd.db").read_bytes()
    env = clean_env(LABD_DATA_DIR=str(data), LABD_PORT="0", LABD_HOST="127.0.0.1")
    res = run([sys.executable, "-m", "lab.labd.main"], env, timeout=30)
    assert res.returncode == 1
    assert "newer" in res.stderr.lower(), res.stderr
    assert (data / "labd.db").read_bytes() == before
