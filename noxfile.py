"""Developer sessions. ``nox`` alone runs the smoke walk, then the default test suite."""

from __future__ import annotations

import logging

import nox

nox.options.sessions = ["smoke", "tests"]
nox.options.default_venv_backend = "venv"


class _NoUvNotice(logging.Filter):
    """nox looks for uv even with the venv backend and says "uv binary not found." each run;
    sessions here use venv and pip on purpose, so that line is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "uv binary not found."


logging.getLogger("nox").addFilter(_NoUvNotice())

PYTHON = "3.11"
# Most tests wait on daemons they start (labd, agents, labctl processes): two workers keep both
# cores busy. Each worker starts its own PostgreSQL.
XDIST = ["-n", "2", "--dist", "loadfile"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The default suite: unit, integration and end-to-end tests (SQLite and PostgreSQL), in
    two pytest-xdist workers (a test file stays on one worker); ``nox -s tests -- -n 0`` runs
    it in one process."""
    session.install("-e", ".[test]")
    session.run("pytest", "-p", "no:cacheprovider", *XDIST, *session.posargs)


@nox.session(python=PYTHON)
def tests_postgres(session: nox.Session) -> None:
    """The storage contract suite against a throwaway PostgreSQL 15."""
    session.install("-e", ".[test]")
    session.run(
        "pytest", "-p", "no:cacheprovider", "tests/store", "-m", "postgres", *session.posargs
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "bench", "contrib", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "contrib", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy", "types-PyYAML")
    session.run("mypy")


# Small sizes so `nox -s bench` finishes in a few minutes; the scripts' own defaults are the
# full-size runs (e.g. `python bench/exec_throughput.py` moves 1 GB, `bench/agents.py
# --agents 10000`). Scripts not listed run with their defaults.
BENCH_SMALL = {
    "agents.py": ["--agents", "200", "--steady", "12"],
    "exec_latency.py": ["--runs", "5", "--relay-runs", "50"],
    "exec_throughput.py": ["--mb", "200"],
    "fanout.py": ["--agents", "50"],
    "kubeproxy.py": ["--runs", "10", "--seconds", "5"],
    "faults.py": ["--rounds", "1", "--head", "5", "--short", "50", "--mb", "20", "--stall", "5"],
}


def lowest_constraints(pyproject: str = "pyproject.toml") -> str:
    """``name==X`` for every direct dependency ``name>=X`` (and ``==X``) of labctl and of its
    postgres extra: pip's constraints for the lowest versions pyproject.toml allows."""
    import re
    import tomllib

    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    lines = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["postgres"]]:
        match = re.fullmatch(
            r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(?:>=|==)\s*([^,;\s]+)", requirement
        )
        if match is None:
            raise ValueError(f"no lower bound in {requirement!r}")
        lines.append(f"{match[1]}=={match[2]}")
    return "\n".join(lines) + "\n"


@nox.session(python=PYTHON)
def lowest(session: nox.Session) -> None:
    """The smoke walk on the lowest versions pyproject.toml allows: each direct dependency
    (and the postgres extra's) pinned to its lower bound, so every bound is a true one."""
    import pathlib

    constraints = pathlib.Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text(lowest_constraints())
    session.log("constraints:\n" + constraints.read_text())
    session.install("-c", str(constraints), "-e", ".[postgres]")
    session.run("python", "-m", "pip", "list")
    session.run("python", "tests/smoke/smoke.py")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Man pages in man/ from the programs' own help (contrib/man/mkman.py): labctl(1),
    labd(8), lab-agent(8), lab-bastion(8). They are tracked in git and shipped in the wheel
    (lab/_data/man and share/man); tests/cli/test_manpages.py fails when they are stale."""
    session.install("-e", ".")
    session.run("python", "contrib/man/mkman.py", "man")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks; each prints JSON lines {bench, value, unit, baseline, ratio}.

    `nox -s bench` runs each with small sizes; `nox -s bench -- ARGS` passes ARGS to every
    script instead. The ssh baselines need openssh-server (apt-get install openssh-server);
    `nox -s bench -- --with-salt` also installs Salt into its own virtualenv (.nox/salt-peer)
    and measures `labctl exec` against `salt minion1 cmd.run` (bench/exec_latency.py).
    A first line names the machine and its load average: figures are only comparable with both.
    """
    session.install("-e", ".[test]")
    import os
    import pathlib
    import platform

    posargs = list(session.posargs)
    salt_bin: list[str] = []
    if "--with-salt" in posargs:
        posargs.remove("--with-salt")
        venv = pathlib.Path(".nox") / "salt-peer"
        if not (venv / "bin" / "salt-master").exists():
            session.run("python", "-m", "venv", str(venv))
            session.run(str(venv / "bin" / "pip"), "install", "-q", "salt", external=True)
        salt_bin = ["--salt-bin", str((venv / "bin").resolve())]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    session.log(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load}")
    for script in sorted(pathlib.Path("bench").glob("*.py")):
        if script.name.startswith("_"):
            continue
        args = posargs or BENCH_SMALL.get(script.name, [])
        if script.name == "exec_latency.py":
            args = [*args, *salt_bin]
        session.run("python", str(script), *args)


@nox.session(python=PYTHON)
def mutants(session: nox.Session) -> None:
    """Mutation testing of the security and flow-control core (contrib/mutants/targets.py).

    Not in the default sessions: mutmut with one worker at nice 10, then the hand-made mutants;
    `nox -s mutants -- rbac ratelimit` runs only those targets. Each target prints
    {"bench": "mutants_<target>", "value": % killed, "unit": "%", "baseline": 90, "ratio"}.
    """
    session.install("-e", ".[test]", "mutmut==3.8.1")
    session.run("python", "contrib/mutants/run.py", *session.posargs)


# One file for operators' laptops: `./labctl.pyz get servers`. Compiled dependencies
# (cffi, cryptography) are those of the building interpreter: build with the Python minor
# version and platform the file will run on. tests/ops/test_zipapp.py builds it the same way.
ZIPAPP_ARGS = ("-c", "labctl", "-p", "/usr/bin/env python3", "--compressed", "--reproducible")


def _build_zipapp(session: nox.Session) -> None:
    import pathlib

    pathlib.Path("dist").mkdir(exist_ok=True)
    session.run("shiv", *ZIPAPP_ARGS, "-o", "dist/labctl.pyz", ".")


@nox.session(python=PYTHON)
def zipapp(session: nox.Session) -> None:
    """Build dist/labctl.pyz: the labctl CLI and its dependencies in one file (shiv)."""
    session.install("shiv")
    _build_zipapp(session)
    session.log("built dist/labctl.pyz; try: dist/labctl.pyz version")


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Release artifacts in dist/: sdist, wheel and labctl.pyz, checked before publishing.

    The version comes from the git tag (hatch-vcs). Checks: `twine check`, the data files of
    the wheel and the files of the sdist (contrib/release/check_dist.py), then the wheel alone
    in a fresh venv runs `labctl version` and each daemon's `--version` and `--help`, and the
    zipapp runs `version`. In a tag's workflow run (GITHUB_REF_TYPE=tag), or with
    `nox -s build -- vX.Y.Z`, the version must be the tag's and CHANGELOG.md must have its
    section, which becomes dist/release-notes.md.
    """
    import os
    import pathlib
    import shutil

    session.install("build", "twine", "shiv")
    # The man pages from this tree's help text (the wheel ships them).
    session.install("-e", ".")
    session.run("python", "contrib/man/mkman.py", "man")
    dist = pathlib.Path("dist")
    for old in [*dist.glob("labctl-*"), dist / "labctl.pyz", dist / "release-notes.md"]:
        old.unlink(missing_ok=True)
    session.run("python", "-m", "build", "--outdir", "dist", ".")
    _build_zipapp(session)
    (sdist,) = dist.glob("labctl-*.tar.gz")
    (wheel,) = dist.glob("labctl-*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))

    tag = session.posargs[0] if session.posargs else None
    if tag is None and os.environ.get("GITHUB_REF_TYPE") == "tag":
        tag = os.environ["GITHUB_REF_NAME"]
    check = ["python", "contrib/release/check_dist.py", str(sdist), str(wheel)]
    out = session.run(*check, *(["--tag", tag] if tag else []), silent=True)
    assert isinstance(out, str)
    print(out, end="")
    version = out.strip().splitlines()[-1]
    if tag:
        notes = ["python", "contrib/release/changelog.py", tag, "--out", "dist/release-notes.md"]
        session.run(*notes)

    # The wheel alone, with its dependencies from the index, in a venv outside the checkout.
    fresh = pathlib.Path(session.create_tmp()).resolve() / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    session.run("python", "-m", "venv", str(fresh))
    session.run(
        str(fresh / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel), external=True
    )
    expected = {
        ("labctl", "version"): f"labctl {version}",
        ("labd", "--version"): f"labd {version}",
        ("labd", "--help"): "Usage: labd",
        ("lab-agent", "--help"): "Usage: lab-agent",
        ("lab-agent", "--version"): f"lab-agent {version}",
        ("lab-bastion", "--help"): "Usage: lab-bastion",
        ("lab-bastion", "--version"): f"lab-bastion {version}",
    }
    env = {"SHIV_ROOT": str(fresh / "shiv"), "HOME": str(fresh)}
    for (program, *args), wanted in expected.items():
        shown = session.run(str(fresh / "bin" / program), *args, external=True, silent=True)
        if not isinstance(shown, str) or not shown.startswith(wanted):
            session.error(f"{program} {' '.join(args)}: wanted {wanted!r}, got {shown!r}")
    shown = session.run(str(dist / "labctl.pyz"), "version", external=True, silent=True, env=env)
    if shown != f"labctl {version}\n":
        session.error(f"labctl.pyz version: wanted labctl {version}, got {shown!r}")
    for artifact in sorted(dist.iterdir()):
        session.log(f"{artifact}  {artifact.stat().st_size} bytes")


# Debian's and RPM's names for the machine the packages are built on (nfpm's ARCH).
NFPM_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@nox.session(python=PYTHON)
def packages(session: nox.Session) -> None:
    """dist/*.deb and dist/*.rpm with nfpm (contrib/nfpm/nfpm.yaml), from the wheel in dist/.

    Run `nox -s build` first: the packages carry that wheel (same version) with the
    `postgres` extra and every dependency as a wheelhouse for the Python running this session,
    so build on the distribution release you package for (Debian 12: Python 3.11).
    """
    import pathlib
    import platform
    import shutil

    dist = pathlib.Path("dist")
    wheels = sorted(dist.glob("labctl-*.whl"))
    if len(wheels) != 1:
        session.error(f"need exactly one labctl wheel in dist/ (nox -s build), found {wheels}")
    (wheel,) = wheels
    version = wheel.name.split("-")[1]
    arch = NFPM_ARCH.get(platform.machine(), platform.machine())
    session.install("nfpm")
    house = pathlib.Path("build") / "wheelhouse"
    shutil.rmtree(house, ignore_errors=True)
    session.run(
        "python", "-m", "pip", "wheel", "-q", "--wheel-dir", str(house), f"{wheel}[postgres]"
    )
    for old in [*dist.glob("*.deb"), *dist.glob("*.rpm")]:
        old.unlink()
    for packager in ("deb", "rpm"):
        session.run(
            "nfpm",
            "package",
            "-f",
            "contrib/nfpm/nfpm.yaml",
            "-p",
            packager,
            "-t",
            "dist/",
            env={"VERSION": version, "ARCH": arch},
        )
    for artifact in sorted([*dist.glob("*.deb"), *dist.glob("*.rpm")]):
        session.log(f"{artifact}  {artifact.stat().st_size} bytes")


@nox.session(python=False)
def checksums(session: nox.Session) -> None:
    """dist/SHA256SUMS of the release artifacts in dist/ (`sha256sum -c SHA256SUMS` checks)."""
    import hashlib
    import pathlib

    dist = pathlib.Path("dist")
    patterns = ("labctl-*.tar.gz", "labctl-*.whl", "labctl.pyz", "*.deb", "*.rpm")
    artifacts = sorted({p for pattern in patterns for p in dist.glob(pattern)})
    if not artifacts:
        session.error("no artifacts in dist/: run nox -s build (and packages) first")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in artifacts]
    (dist / "SHA256SUMS").write_text("".join(lines))
    session.log(f"dist/SHA256SUMS: {len(lines)} files")


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """labd, the bastion and two agents as real processes: the operator's story, step by step."""
    session.install("-e", ".")
    session.run("python", "tests/smoke/smoke.py", *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """schemathesis against a real labd with an admin certificate (>= 1,000 cases)."""
    session.install("-e", ".[test]", "schemathesis")
    session.run("python", "tests/fuzz/run_schemathesis.py", *session.posargs)


@nox.session(python=PYTHON)
def tests_cluster(session: nox.Session) -> None:
    """Cluster mode: two labd replicas and agents on a throwaway PostgreSQL, k8s manifests."""
    session.install("-e", ".[test]", "kubernetes")
    session.run("pytest", "-p", "no:cacheprovider", "tests/cluster", *session.posargs)
