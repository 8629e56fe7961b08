"""The built wheel carries the data folders, and a fresh install of it serves /healthz."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from tests.e2e.procs import clean_env, free_port, kill_on_exit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("labctl-*.whl")
    return found


def test_wheel_lists_kickstart_schema_and_units(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("kickstart", "schema", "units", "man"):
        repo_files = [p for p in (ROOT / folder).rglob("*") if p.is_file()]
        assert repo_files, folder
        for p in repo_files:
            assert f"lab/_data/{folder}/{p.relative_to(ROOT / folder)}" in names
    # templates kept beside the code that renders them
    for template in ("k3s-config.yaml.j2", "k3s.service.j2"):
        assert f"lab/labd/clusterops/templates/{template}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("labctl", "labd", "lab-bastion", "lab-agent"):
        assert f"{script} =" in text


def test_fresh_install_serves_healthz_without_config(wheel: Path, tmp_path: Path) -> None:
    # The venv sees this interpreter's packages for the dependencies (no downloads in tests),
    # but labctl itself comes only from the wheel.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # A plain path line (not addsitedir): the test interpreter's dependencies become importable
    # without processing its .pth files, so an editable install of labctl stays invisible.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "zz_test_deps.pth").write_text(deps + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        capture_output=True,
    )
    home = tmp_path / "home"
    home.mkdir()
    port = 3100 if _port_free(3100) else free_port()
    env = clean_env(HOME=str(home), LABD_PORT=str(port), LABD_HOST="127.0.0.1")
    if port == 3100:
        env.pop("LABD_PORT")
    data = Path("/var/lib/lab") if _is_root() else home / ".local" / "share" / "lab"
    if _is_root():
        env["LABD_DATA_DIR"] = str(tmp_path / "var-lib-lab")  # never touch the real /var/lib
        data = tmp_path / "var-lib-lab"
    proc = subprocess.Popen([str(env_dir / "bin" / "labd")], env=env, cwd=tmp_path)
    with kill_on_exit(proc):
        health = _wait_health(f"https://127.0.0.1:{port}/healthz", proc, data / "ca.pem")
    # The version the build took from the git tag, as the wheel's file name says it.
    assert health == {"status": "ok", "version": wheel.name.split("-")[1]}
    assert (data / "labd.db").exists()
    # The module came from the wheel, not from the checkout.
    where = subprocess.run(
        [str(py), "-c", "import lab, sys; print(lab.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert str(env_dir) in where


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_health(url: str, proc: subprocess.Popen[bytes], cafile: Path) -> object:
    import json
    import ssl
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "labd exited"
        try:
            ctx = ssl.create_default_context(cafile=str(cafile))
            with urllib.request.urlopen(url, timeout=1, context=ctx) as resp:
                assert resp.status == 200
                return json.loads(resp.read())
        except OSError:
            # Polling a starting daemon is the readiness check itself, not synchronisation.
            time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")
