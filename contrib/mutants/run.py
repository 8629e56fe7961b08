"""Mutation testing of labctl's security and flow-control core: ``nox -s mutants [-- TARGET...]``.

Each target (see ``targets.py``) is mutated by mutmut (one worker, ``nice -n 10``) and then by
its hand-made mutants (what mutmut cannot reach: decorated functions, SQL text, regular
expressions), each run against the target's own fast tests. One JSON line per target on stdout:
``{"bench": "mutants_<target>", "value": <% killed>, "unit": "%", "baseline": 90, "ratio": ...}``;
the surviving mutants go to stderr with their diffs.

Each target runs in a scratch copy of ``src``, ``tests``, the data beside them and
``pyproject.toml`` (mutmut reads its
configuration from the working directory's pyproject.toml and works in ``mutants/`` there), so
the checkout is never touched. ``--keep`` leaves the scratch directories for ``mutmut show``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from targets import BASELINE, TARGETS, HandMutant, Target

ROOT = Path(__file__).resolve().parents[2]
NICE = ["nice", "-n", "10"]
# mutmut's exit codes that count as killed: a test failed (1), pytest's internal error (3), or
# the mutant made the tests run far beyond their clean time (timeout).
KILLED = {1, 3, 36, -24, 24, 152, 255}
NO_TESTS = 33
# Read from beside src/ by a source checkout (migrations, templates, unit files).
DATA = ("schema", "kickstart", "units")
SHOW_AT_MOST = 60  # diffs printed per target; `mutmut show` takes a while each


def _copy_tree(into: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for tree in ("src", "tests", *DATA):
        shutil.copytree(ROOT / tree, into / tree, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", into / "pyproject.toml")  # pytest's configuration


def _pyproject(target: Target) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    if "[tool.mutmut]" in text:
        raise SystemExit("pyproject.toml has a [tool.mutmut] table: targets.py configures mutmut")
    quoted = ", ".join(json.dumps(t) for t in target.tests)
    mutate = ", ".join(json.dumps(f) for f in target.mutmut)
    return (
        text
        + "\n[tool.mutmut]\n"
        + 'source_paths = ["src"]\n'
        + f"also_copy = [{', '.join(json.dumps(d) for d in DATA)}]\n"
        + f"only_mutate = [{mutate}]\n"
        + f"pytest_add_cli_args_test_selection = [{quoted}]\n"
        + 'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        + "use_git_change_detection = false\n"
    )


def run_mutmut(target: Target, work: Path) -> tuple[int, list[str]]:
    """(mutants, names of those not killed) of mutmut's run over ``target.mutmut``."""
    if not target.mutmut:
        return 0, []
    (work / "pyproject.toml").write_text(_pyproject(target))
    mutmut = Path(sys.executable).with_name("mutmut")
    log = work / "mutmut.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [*NICE, str(mutmut), "run", "--max-children", "1", *target.only],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise SystemExit(f"mutmut failed on {target.name} (exit {done.returncode}), see above")
    total, alive = 0, []
    for path in target.mutmut:
        meta = json.loads((work / "mutants" / f"{path}.meta").read_text())
        for name, code in meta["exit_code_by_key"].items():
            if target.only and not any(fnmatch.fnmatchcase(name, g) for g in target.only):
                continue
            total += 1
            if code not in KILLED:
                alive.append(name if code != NO_TESTS else f"{name} (no test reaches it)")
    return total, sorted(alive)


def _show(work: Path, name: str) -> str:
    mutmut = Path(sys.executable).with_name("mutmut")
    shown = subprocess.run(
        [str(mutmut), "show", name], cwd=work, capture_output=True, text=True, check=False
    )
    lines = shown.stdout.splitlines()
    return "\n".join(f"    {x}" for x in lines if x[:1] in "+-" and x[:3] not in ("---", "+++"))


def _pytest(work: Path, tests: tuple[str, ...]) -> int:
    env = {**os.environ, "PYTHONPATH": str(work / "src")}
    args = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(
        [*NICE, *args], cwd=work, env=env, capture_output=True, check=False, timeout=600
    )
    return done.returncode


def run_hand(target: Target, work: Path) -> tuple[int, list[str]]:
    """(mutants, descriptions of those not killed) of ``target.hand``, one copy each."""
    if not target.hand:
        return 0, []
    scratch = work / "hand"
    _copy_tree(scratch)
    if _pytest(scratch, target.tests) != 0:
        raise SystemExit(f"{target.name}: the tests fail without any mutant")
    alive = []
    for mutant in target.hand:
        path = scratch / mutant.path
        original = path.read_text()
        path.write_text(_apply(mutant, original))
        try:
            code = _pytest(scratch, target.tests)
        finally:
            path.write_text(original)
        if code not in (1, 3):
            if code != 0:
                raise SystemExit(f"{target.name}: pytest exited {code} for {mutant.describe()}")
            alive.append(mutant.describe())
    return len(target.hand), alive


def _apply(mutant: HandMutant, text: str) -> str:
    if text.count(mutant.old) != 1:
        raise SystemExit(
            f"stale hand mutant ({mutant.describe()}): {mutant.old!r} occurs "
            f"{text.count(mutant.old)} times in {mutant.path}; update contrib/mutants/targets.py"
        )
    return text.replace(mutant.old, mutant.new)


def run_target(target: Target, keep: bool) -> float:
    work = Path(tempfile.mkdtemp(prefix=f"labctl-mutants-{target.name}-"))
    try:
        _copy_tree(work)
        total, alive = run_mutmut(target, work)
        shown = [
            f"{name}\n{_show(work, name)}" if i < SHOW_AT_MOST and " " not in name else name
            for i, name in enumerate(alive)
        ]
        hand_total, hand_alive = run_hand(target, work)
    finally:
        if keep:
            print(f"{target.name}: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    killed = total - len(alive) + hand_total - len(hand_alive)
    score = 100.0 * killed / max(1, total + hand_total)
    print(
        f"{target.name}: mutmut {total - len(alive)}/{total} killed, "
        f"hand {hand_total - len(hand_alive)}/{hand_total} killed",
        file=sys.stderr,
    )
    for text in shown + [f"hand: {d}" for d in hand_alive]:
        print(f"  survived: {text}", file=sys.stderr)
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories")
    args = parser.parse_args()
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    for name in args.targets or list(TARGETS):
        score = run_target(TARGETS[name], args.keep)
        line = {
            "bench": f"mutants_{name}",
            "value": round(score, 1),
            "unit": "%",
            "baseline": BASELINE,
            "ratio": round(score / BASELINE, 3),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
