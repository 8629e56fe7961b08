"""Developer sessions. ``nox`` alone runs the smoke walk, then the default test suite."""

from __future__ import annotations

import nox

nox.options.sessions = ["smoke", "tests"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The default suite: unit, integration and end-to-end tests (SQLite and PostgreSQL)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


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
    session.run("ruff", "check", "src", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "noxfile.py")


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
}


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks; each prints JSON lines {bench, value, unit, baseline, ratio}.

    `nox -s bench` runs each with small sizes; `nox -s bench -- ARGS` passes ARGS to every
    script instead. The ssh baselines need openssh-server (apt-get install openssh-server).
    """
    session.install("-e", ".[test]")
    import pathlib

    for script in sorted(pathlib.Path("bench").glob("*.py")):
        if script.name.startswith("_"):
            continue
        args = session.posargs or BENCH_SMALL.get(script.name, [])
        session.run("python", str(script), *args)


# One file for operators' laptops: `./labctl.pyz get servers`. Compiled dependencies
# (cffi, cryptography) are those of the building interpreter: build with the Python minor
# version and platform the file will run on. tests/ops/test_zipapp.py builds it the same way.
ZIPAPP_ARGS = ("-c", "labctl", "-p", "/usr/bin/env python3", "--compressed", "--reproducible")


@nox.session(python=PYTHON)
def zipapp(session: nox.Session) -> None:
    """Build dist/labctl.pyz: the labctl CLI and its dependencies in one file (shiv)."""
    import pathlib

    session.install("shiv")
    pathlib.Path("dist").mkdir(exist_ok=True)
    session.run("shiv", *ZIPAPP_ARGS, "-o", "dist/labctl.pyz", ".")
    session.log("built dist/labctl.pyz; try: dist/labctl.pyz version")


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """labd, the bastion and two agents as real processes: the operator's story, step by step."""
    session.install("-e", ".[test]")
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
