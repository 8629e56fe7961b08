"""kubectl through labd's /k8s proxy vs straight to the API server.

Run: ``python bench/kubeproxy.py [--runs 30] [--seconds 10] [--concurrency 32]``. Starts
labd in this process (loopback, real TLS, SQLite, audit on) with kmock as the cluster's API
server (its own process), then prints JSON lines:

- ``kubeproxy_kubectl_get_p50`` / ``_p99``: wall time of ``kubectl get pods`` through labd, in
  milliseconds; baseline the same command straight to kmock, ratio proxy/direct (goal ≤ 1.2);
- ``kubeproxy_get_rate``: GETs per second of one pod list through labd from a separate load
  process (``bench/_kube_load.py``), every one authenticated, judged and audited, against a
  fast stand-in API server (``bench/_static_api.py``: kmock itself serves a few dozen a
  second here); baseline the same load straight to the stand-in. ``errors`` counts answers
  other than 200 (goal: none); ``labd_cpu_ms_per_request`` is labd's CPU time per proxied
  GET (steadier than the rate on a shared, loaded box), ``load_cpu_ms_per_request`` the load
  process's. Every line has the load average.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kube.kmock_server import run_kube_api  # noqa: E402
from tests.kubeproxy.rig import KUBECTL, proxy_rig  # noqa: E402

from lab import pki  # noqa: E402

LIST = "/api/v1/namespaces/default/pods"
HANDLER = "tests.kubeproxy.recording:KubectlKubeAPI"
TOKEN = "bench-token"


def emit(bench: str, value: float, unit: str, baseline: float | None, **extra: object) -> None:
    ratio = value / baseline if baseline else None
    line = {
        "bench": bench,
        "value": round(value, 3),
        "unit": unit,
        "baseline": round(baseline, 3) if baseline else baseline,
        "ratio": round(ratio, 3) if ratio else None,
        "load_average": round(os.getloadavg()[0], 2),
        **extra,
    }
    print(json.dumps(line), flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def kubectl_times(kubeconfig: Path, home: Path, runs: int) -> list[float]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    argv = [KUBECTL, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "default"]
    times = []
    for _ in range(runs + 2):  # two warm-ups fill kubectl's discovery cache
        start = time.perf_counter()
        done = await trio.run_process(argv, env=env, capture_stdout=True, capture_stderr=True)
        assert done.returncode == 0, done.stderr
        times.append((time.perf_counter() - start) * 1000)
    return times[2:]


async def load(
    url: str, ca: Path, cert: str, key: str, seconds: float, conc: int, token: str = ""
) -> dict[str, float]:
    argv = [
        sys.executable,
        str(ROOT / "bench" / "_kube_load.py"),
        url,
        str(ca),
        cert,
        key,
        str(seconds),
        str(conc),
    ]
    if token:
        argv.append(token)
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


@asynccontextmanager
async def static_api(tmp: Path) -> AsyncIterator[tuple[str, Path]]:
    """bench/_static_api.py as its own process: its kubeconfig text and CA file."""
    ca = pki.create_ca("static API CA")
    key = pki.generate_key()
    cert, _ = pki.issue_server_cert(ca, pki.make_csr(key, "static"))
    (tmp / "static.pem").write_bytes(cert)
    (tmp / "static-key.pem").write_bytes(key)
    (tmp / "static-ca.pem").write_bytes(ca.cert_pem())
    argv = [
        sys.executable,
        str(ROOT / "bench" / "_static_api.py"),
        str(tmp / "static.pem"),
        str(tmp / "static-key.pem"),
        TOKEN,
    ]
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int((await proc.stdout.receive_some(100)).strip())
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "f",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": base64.b64encode(ca.cert_pem()).decode(),
                    },
                }
            ],
            "users": [{"name": "f", "user": {"token": TOKEN}}],
            "contexts": [{"name": "f", "context": {"cluster": "f", "user": "f"}}],
            "current-context": "f",
        }
        yield yaml.safe_dump(doc), tmp / "static-ca.pem"
    finally:
        proc.kill()
        await proc.wait()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-kubeproxy-") as tmp_name:
        tmp = Path(tmp_name)
        async with run_kube_api(tmp, handler=HANDLER) as api, proxy_rig(tmp, {"home": api}) as rig:
            proxied = rig.kubeconfig(rig.admin, namespace="default")
            direct = tmp / "direct.yaml"
            direct.write_text(api.kubeconfig)
            home = tmp / "home"
            via = await kubectl_times(proxied, home, args.runs)
            straight = await kubectl_times(direct, home, args.runs)
            for pct in (50, 99):
                emit(
                    f"kubeproxy_kubectl_get_p{pct}",
                    percentile(via, pct),
                    "ms",
                    percentile(straight, pct),
                )
            ident = proxied.parent
            async with static_api(tmp) as (fast_kubeconfig, fast_ca):
                async with rig.labd.client(rig.admin) as http:
                    resp = await http.post(
                        "/api/clusters/import", json={"name": "fast", "kubeconfig": fast_kubeconfig}
                    )
                    assert resp.status_code == 201, resp.text
                fast_url = yaml.safe_load(fast_kubeconfig)["clusters"][0]["cluster"]["server"]
                cpu = time.process_time()  # labd runs in this process; the load does not
                through = await load(
                    f"{rig.labd.url}/k8s/fast{LIST}",
                    ident / "ca.pem",
                    str(ident / "cert.pem"),
                    str(ident / "key.pem"),
                    args.seconds,
                    args.concurrency,
                )
                cpu = time.process_time() - cpu
                base = await load(
                    f"{fast_url}{LIST}",
                    fast_ca,
                    "-",
                    "-",
                    args.seconds,
                    args.concurrency,
                    TOKEN,
                )
            emit(
                "kubeproxy_get_rate",
                through["requests"] / through["seconds"],
                "req/s",
                base["requests"] / base["seconds"],
                errors=through["errors"],
                labd_cpu_ms_per_request=round(cpu * 1000 / max(1, through["requests"]), 3),
                load_cpu_ms_per_request=through["cpu_ms_per_request"],
                concurrency=args.concurrency,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    trio.run(main, parser.parse_args())
