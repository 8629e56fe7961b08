"""The version comes from the git tag (hatch-vcs) and reaches ``labctl version`` and ``labd``.

Each test copies the working tree (what git would commit) into a fresh repository, so the
checkout's own tags, if any, play no part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.e2e.procs import clean_env

ROOT = Path(__file__).resolve().parents[2]
GIT = shutil.which("git")

pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    assert GIT is not None
    env = clean_env(
        GIT_AUTHOR_NAME="labctl test",
        GIT_AUTHOR_EMAIL="test@labctl.invalid",
        GIT_COMMITTER_NAME="labctl test",
        GIT_COMMITTER_EMAIL="test@labctl.invalid",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    proc = subprocess.run(
        [GIT, "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def copy_tree(dest: Path) -> Path:
    """The tracked and untracked, not ignored, files of the checkout, as one new commit."""
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if not src.is_file():  # deleted in the working tree but still in the index
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "snapshot")
    return dest


def build_env() -> dict[str, str]:
    """The environment without setuptools-scm overrides (a release job may set them)."""
    env = clean_env()
    for name in list(env):
        if name.startswith(("SETUPTOOLS_SCM_", "HATCH_")):
            del env[name]
    return env


def install(repo: Path, where: Path) -> Path:
    """Build a wheel of ``repo`` and install it alone into a new venv; returns its bin dir."""
    wheels = where / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(repo)],
        capture_output=True,
        text=True,
        env=build_env(),
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("labctl-*.whl")
    env_dir = where / "venv"
    venv.create(env_dir, with_pip=False)
    # The dependencies come from this interpreter's site-packages (a plain path line, so the
    # editable install of the checkout stays invisible); labctl itself only from the wheel.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "zz_test_deps.pth").write_text(deps + "\n")
    py = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps"]
    done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return env_dir / "bin"


def run(program: Path, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [str(program), *args], capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_tag_sets_the_version_of_labctl_and_labd(tmp_path: Path) -> None:
    repo = copy_tree(tmp_path / "repo")
    git(repo, "tag", "-a", "v7.3.1", "-m", "labctl 7.3.1")
    bin_dir = install(repo, tmp_path)
    assert run(bin_dir / "labctl", "version", cwd=tmp_path) == "labctl 7.3.1"
    assert run(bin_dir / "labd", "--version", cwd=tmp_path) == "labd 7.3.1"
    assert run(bin_dir / "lab-agent", "--version", cwd=tmp_path) == "lab-agent 7.3.1"
    assert run(bin_dir / "lab-bastion", "--version", cwd=tmp_path) == "lab-bastion 7.3.1"
    assert run(
        bin_dir / "python", "-c", "import lab; print(lab.__file__)", cwd=tmp_path
    ).startswith(str(bin_dir.parent))

    # One commit past the tag: a development version above it, never the tag itself.
    (repo / "CHANGELOG.md").write_text((repo / "CHANGELOG.md").read_text() + "\n")
    git(repo, "commit", "-q", "-am", "after the release")
    shutil.rmtree(tmp_path / "wheels")
    shutil.rmtree(tmp_path / "venv")
    bin_dir = install(repo, tmp_path)
    after = run(bin_dir / "labctl", "version", cwd=tmp_path)
    assert after.startswith("labctl 7.3.2.dev1+g"), after


def test_untagged_clone_gets_a_development_version(tmp_path: Path) -> None:
    repo = copy_tree(tmp_path / "repo")
    bin_dir = install(repo, tmp_path)
    shown = run(bin_dir / "labctl", "version", cwd=tmp_path)
    assert shown.startswith("labctl 0.0.1.dev1+g"), shown


def test_labd_answers_help_and_version_without_starting(tmp_path: Path) -> None:
    # A data dir labd could use: were it to start instead of answering, it would create it.
    env = clean_env(LABD_DATA_DIR=str(tmp_path / "data"), LABD_PORT="1")
    argv = [sys.executable, "-m", "lab.labd.main"]
    # As a subprocess reads it now (a build by another test may have rewritten lab/_version.py).
    __version__ = subprocess.run(
        [sys.executable, "-c", "from lab import __version__; print(__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert __version__
    for flag in ("--version", "-V"):
        proc = subprocess.run([*argv, flag], capture_output=True, text=True, env=env, timeout=60)
        assert (proc.returncode, proc.stdout) == (0, f"labd {__version__}\n"), proc.stderr
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: labd [--help | --version | secrets rotate]")
    proc = subprocess.run([*argv, "--port", "80"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "labd: error: unknown option: --port", proc.stderr
    assert not (tmp_path / "data").exists()


def test_container_build_context_takes_the_version_from_the_build_arg(tmp_path: Path) -> None:
    # What contrib/container/Containerfile copies: no .git, the version comes from
    # LABCTL_VERSION through SETUPTOOLS_SCM_PRETEND_VERSION, else the fallback 0.0.0.
    context = tmp_path / "context"
    context.mkdir()
    for name in (
        "pyproject.toml",
        "README.md",
        "src",
        "kickstart",
        "schema",
        "units",
        "man",
        "modules",
    ):
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, context / name, ignore=shutil.ignore_patterns("_version.py")
            )
        else:
            shutil.copy2(ROOT / name, context / name)
    for pretend, wanted in (("4.5.6", "4.5.6"), (None, "0.0.0")):
        env = build_env()
        if pretend is not None:
            env["SETUPTOOLS_SCM_PRETEND_VERSION"] = pretend
        out = tmp_path / f"wheels-{wanted}"
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(context)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert build.returncode == 0, build.stderr[-3000:]
        (wheel,) = out.glob("labctl-*.whl")
        assert wheel.name == f"labctl-{wanted}-py3-none-any.whl"
        with zipfile.ZipFile(wheel) as zf:
            assert f'__version__ = "{wanted}"' in zf.read("lab/_version.py").decode()
