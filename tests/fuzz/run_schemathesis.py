"""Fuzz a real labd against schema/openapi.yaml with schemathesis (``nox -s fuzz``).

Starts ``python -m lab.labd.main`` on a free port with a fresh data dir, enrolls an admin
user with the bootstrap token, runs ``st run`` with the admin's client certificate over mTLS
and fails unless at least ``--min-cases`` generated requests ran, none was answered 5xx and
every answer conforms to the spec (status, content type, headers, body schema). Operations
that would cut the run's own access (CA rotation, revoking certificates, disabling users) and
the WebSocket routes are left out. The labd process is stopped whatever happens.

Usage: python tests/fuzz/run_schemathesis.py [--max-examples N] [--min-cases N] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from lab import pki

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "schema" / "openapi.yaml"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
# Operations that would lock the fuzzer out of labd, and the WebSocket upgrades.
EXCLUDED = (
    "caRotate",
    "caRotateFinish",
    "revokeCert",
    "disableUser",
    "agentSocket",
    "execSocket",
    "logsSocket",
)
_LISTENING = re.compile(rb"labd listening on https://([0-9.]+):(\d+)")


@contextmanager
def labd(data: Path) -> Iterator[str]:
    """A labd subprocess; yields its base URL once it listens, stops it on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABD_", "LABCTL_"))}
    env.update(
        LABD_DATA_DIR=str(data),
        LABD_HOST="127.0.0.1",
        LABD_PORT="0",
        LABD_ENROLL_RATE="0",
        LABD_RATE_GLOBAL="0",
        LABD_RATE_TOKENS="0",
        LABD_LOG_LEVEL="info",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.labd.main"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        # Keep draining stderr so labd never blocks on a full pipe.
        assert proc.stderr is not None
        for raw in proc.stderr:
            m = _LISTENING.search(raw)
            if m and not found.is_set():
                url.append(f"https://{m.group(1).decode()}:{m.group(2).decode()}")
                found.set()
            elif b"Traceback" in raw or b" ERROR " in raw:
                sys.stderr.write("labd: " + raw.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not found.wait(60):
            raise SystemExit("labd did not start within 60 s")
        yield url[0]
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)


def enroll_admin(url: str, data: Path, out: Path) -> tuple[Path, Path, Path]:
    ca = data / "ca.pem"
    key = pki.generate_key()
    token = (data / "bootstrap-token").read_text().strip()
    with httpx.Client(base_url=url, verify=pki.client_ssl_context(ca.read_bytes())) as http:
        resp = http.post(
            "/api/auth/user-enroll",
            json={"token": token, "csr": pki.make_csr(key, "x").decode(), "username": "fuzz"},
        )
    resp.raise_for_status()
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    cert_path.write_text(resp.json()["certificate"])
    key_path.write_bytes(key)
    key_path.chmod(0o600)
    return ca, cert_path, key_path


def count_cases(ndjson: Path) -> int:
    """Generated test cases that got an answer, from schemathesis' NDJSON event report."""
    total = 0
    for line in ndjson.read_text().splitlines():
        if '"interactions"' not in line and '"recorder"' not in line:
            continue
        event = json.loads(line)
        for value in event.values():
            if isinstance(value, dict) and isinstance(value.get("recorder"), dict):
                total += len(value["recorder"].get("interactions", {}))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=60)
    parser.add_argument("--min-cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        raise SystemExit("schemathesis is not installed (pip install schemathesis)")
    with tempfile.TemporaryDirectory(prefix="labd-fuzz-") as tmp:
        work = Path(tmp)
        data = work / "labd"
        with labd(data) as url:
            ca, cert, key = enroll_admin(url, data, work)
            report = work / "events.ndjson"
            cmd = [
                st,
                "run",
                str(SPEC),
                "--url",
                url,
                "--request-cert",
                str(cert),
                "--request-cert-key",
                str(key),
                "--tls-verify",
                str(ca),
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                str(args.max_examples),
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "4",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(report),
                "--suppress-health-check",
                "all",
            ]
            for operation in EXCLUDED:
                cmd += ["--exclude-operation-id", operation]
            if args.seed is not None:
                cmd += ["--seed", str(args.seed)]
            print("$", " ".join(cmd), flush=True)
            done = subprocess.run(cmd, check=False)
            cases = count_cases(report) if report.exists() else 0
    print(f"fuzz: {cases} generated requests; schemathesis exit code {done.returncode}")
    if done.returncode != 0:
        print("fuzz: FAILED (a 5xx or a response that violates schema/openapi.yaml; see above)")
        return 1
    if cases < args.min_cases:
        print(f"fuzz: FAILED (only {cases} requests, at least {args.min_cases} wanted)")
        return 1
    print("fuzz: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
