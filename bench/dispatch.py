"""Bench the bastion as a real ``lab-bastion`` process, loaded from other processes.

Figures, printed as JSON lines (nothing is asserted):

* ``dispatch_rps_c50`` / ``dispatch_p99_c50``: ``GET /dispatch`` over 500 unknown MACs at 50
  keep-alive connections, against ``GET /healthz`` of the same server as the baseline;
* ``dispatch_server_cpu_per_req``: the server's CPU time per request of that run, against
  ``/healthz``'s (steadier than throughput when other processes share the machine);
* ``boot_storm_200_machines``: wall time for 200 machines walking discover -> install ->
  progress -> installed, all at once, each on its own connection;
* ``dispatch_installed_rps_c50`` / ``_p99_c50``: ``/dispatch`` over the machines the storm
  installed (the local-boot script), against ``/healthz`` measured alongside.

The server runs as ``lab-bastion serve`` (INFO logging to a file, as under journald) pinned to
one CPU; the load runs in separate processes on the other CPUs: ``wrk`` when it is installed
(Debian package ``wrk``), else a small multi-process keep-alive HTTP/1.1 client in Python.
Each route runs twice, alternating, and keeps its best run.

    .venv/bin/python bench/dispatch.py [--duration 3] [--rounds 3] [--machines 200]
        [--client auto|wrk|python]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONNECTIONS = 50
REPO = "http://mirror.test/fedora/42/os"


def emit(bench: str, value: float, unit: str, baseline: float | None = None) -> None:
    ratio = None if not baseline else round(value / baseline, 3)
    base = None if baseline is None else round(baseline, 3)
    line = {"bench": bench, "value": round(value, 3), "unit": unit, "baseline": base}
    print(json.dumps({**line, "ratio": ratio}), flush=True)


def mac(i: int) -> str:
    return f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


# --- the server -------------------------------------------------------------------------------


def split_cpus() -> tuple[set[int], set[int]]:
    """(server CPUs, load CPUs): the server alone on one CPU when there are two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[0]}, set(cpus[1:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(data: Path, cpus: set[int]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "LAB_BASTION_HOST": "127.0.0.1", "LAB_BASTION_REPO": REPO}
    # Every bench client shares 127.0.0.1: no per-address connection cap.
    env["LAB_BASTION_MAX_UNAUTHENTICATED_PER_ADDRESS"] = "0"
    env.pop("NOTIFY_SOCKET", None)
    argv = [sys.executable, "-c", "from lab.bastion.main import main; main()"]
    argv += ["serve", "--no-dhcp", "--port", str(port), "--data-dir", str(data / "srv")]
    with (data / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    os.sched_setaffinity(proc.pid, cpus)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lab-bastion exited: {(data / 'server.log').read_text()[-2000:]}")
        try:
            status, _ = request_once(port, "GET", "/healthz")
            if status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("lab-bastion did not answer /healthz within 60 s")


def request_once(
    port: int, method: str, target: str, body: bytes = b"", headers: str = ""
) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(http_request(method, target, body, headers))
        buf = b""
        while (length := response_length(buf)) is None or len(buf) < length:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed mid-response")
            buf += chunk
        return int(buf[9:12]), buf[buf.index(b"\r\n\r\n") + 4 : length]


# --- a minimal HTTP/1.1 keep-alive client -----------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def http_request(method: str, target: str, body: bytes = b"", headers: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: bench\r\n{headers}"
    if body or method != "GET":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def response_length(buf: bytes | bytearray) -> int | None:
    """Total length of the response at the start of ``buf`` once its head is in, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    found = _CONTENT_LENGTH.search(buf, 0, end)
    if found is None:
        raise ValueError("response without Content-Length")
    return end + 4 + int(found.group(1))


def _py_load(
    port: int, requests: list[bytes], conns: int, duration: float, cpus: set[int]
) -> tuple[int, list[float], int]:
    """One load process: ``conns`` keep-alive connections, one request in flight on each, for
    ``duration`` seconds. Returns (responses, latencies in s, non-200 responses)."""
    os.sched_setaffinity(0, cpus)
    sel = selectors.DefaultSelector()
    state: dict[int, list[Any]] = {}  # fd -> [socket, buffer, sent at, next request index]
    for i in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        state[s.fileno()] = [s, bytearray(), time.perf_counter(), i + 1]
        s.send(requests[i % len(requests)])
        sel.register(s, selectors.EVENT_READ)
    latencies: list[float] = []
    bad = 0
    end = time.perf_counter() + duration
    while (now := time.perf_counter()) < end:
        for key, _ in sel.select(timeout=end - now):
            st = state[key.fd]
            chunk = st[0].recv(65536)
            if not chunk:
                raise OSError("server closed a keep-alive connection")
            st[1] += chunk
            length = response_length(st[1])
            if length is None or len(st[1]) < length:
                continue
            t = time.perf_counter()
            latencies.append(t - st[2])
            bad += st[1][9:12] != b"200"
            del st[1][:length]
            st[2], st[3] = t, st[3] + 1
            st[0].send(requests[st[3] % len(requests)])
    for st in state.values():
        st[0].close()
    return len(latencies), latencies, bad


def load_python(port: int, paths: list[str], duration: float, cpus: set[int]) -> dict[str, float]:
    procs = max(1, min(len(cpus), 4))
    requests = [http_request("GET", p) for p in paths]
    per = [CONNECTIONS // procs + (i < CONNECTIONS % procs) for i in range(procs)]
    jobs = [(port, requests[i::procs] or requests, n, duration, cpus) for i, n in enumerate(per)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.starmap(_py_load, jobs)
    latencies = sorted(lat for _, lats, _ in results for lat in lats)
    done = sum(n for n, _, _ in results)
    return {
        "requests": done,
        "rps": done / duration,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "bad": sum(b for _, _, b in results),
    }


_WRK_SCRIPT = """
local reqs, i = {}, 0
init = function(args)
  for k, p in ipairs(args) do reqs[k] = wrk.format("GET", p) end
  i = math.random(#reqs)
end
request = function() i = i % #reqs + 1; return reqs[i] end
done = function(s, latency, _)
  local e = s.errors
  io.write(string.format('WRK {"requests": %d, "us": %d, "p99_us": %d, "bad": %d}\\n',
    s.requests, s.duration, latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def load_wrk(
    port: int, paths: list[str], duration: float, cpus: set[int], script: Path
) -> dict[str, float]:
    threads = max(1, min(len(cpus), 4))
    argv = ["wrk", f"-t{threads}", f"-c{CONNECTIONS}", f"-d{duration:g}s", "-s", str(script)]
    argv += [f"http://127.0.0.1:{port}", "--", *paths]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    found = re.search(r"^WRK (\{.*\})$", out.stdout, re.MULTILINE)
    if found is None:
        raise SystemExit(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    r = json.loads(found.group(1))
    rps = r["requests"] / (r["us"] / 1e6)
    return {"requests": r["requests"], "rps": rps, "p99_ms": r["p99_us"] / 1000, "bad": r["bad"]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Loader:
    """Closed-loop GET load from processes pinned to the load CPUs, against one server pid.

    Besides throughput and p99 each run reports the server's CPU time per request, which
    other processes on a busy machine disturb far less than wall-clock throughput.
    """

    def __init__(self, port: int, pid: int, cpus: set[int], client: str, work: Path) -> None:
        self.port, self.pid, self.cpus, self.client = port, pid, cpus, client
        self.script = work / "paths.lua"
        self.script.write_text(_WRK_SCRIPT)

    def run(self, paths: list[str], duration: float) -> dict[str, float]:
        cpu = cpu_seconds(self.pid)
        if self.client == "wrk":
            result = self._pinned(paths, duration)
        else:
            result = load_python(self.port, paths, duration, self.cpus)
        if result["bad"]:
            raise SystemExit(f"{result['bad']:.0f} requests failed or were not 200")
        result["cpu_us"] = (cpu_seconds(self.pid) - cpu) / max(result["requests"], 1) * 1e6
        return result

    def _pinned(self, paths: list[str], duration: float) -> dict[str, float]:
        mine = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cpus)  # inherited by the wrk child and its threads
        try:
            return load_wrk(self.port, paths, duration, self.cpus, self.script)
        finally:
            os.sched_setaffinity(0, mine)

    def compare(
        self, paths: list[str], duration: float, rounds: int
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(``/healthz``, ``paths``), alternated ``rounds`` times; each keeps its best figures,
        so neither the order nor a burst of load from elsewhere picks the winner."""
        static: list[dict[str, float]] = []
        dyn: list[dict[str, float]] = []
        for _ in range(rounds):
            static.append(self.run(["/healthz"], duration))
            dyn.append(self.run(paths, duration))
        return _best(static), _best(dyn)


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "rps": max(r["rps"] for r in runs),
        "p99_ms": min(r["p99_ms"] for r in runs),
        "cpu_us": min(r["cpu_us"] for r in runs),
    }


# --- the boot storm (a separate process) ------------------------------------------------------


def _storm(port: int, admin_token: str, machines: int, cpus: set[int]) -> float:
    os.sched_setaffinity(0, cpus)
    import trio  # only the storm process needs it

    inventory: dict[str, Any] = {
        "firmware": "uefi",
        "memory_bytes": 2**33,
        "disks": [{"name": "/dev/sda", "size_bytes": 2**36}],
    }
    admin = f"Authorization: Bearer {admin_token}\r\n"

    async def machine(i: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()

        async def call(method: str, target: str, body: Any = None, headers: str = "") -> bytes:
            raw = b"" if body is None else json.dumps(body).encode()
            await stream.send_all(http_request(method, target, raw, headers))
            while (length := response_length(buf)) is None or len(buf) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise OSError("server closed the connection")
                buf.extend(chunk)
            status, payload = int(buf[9:12]), bytes(buf[buf.index(b"\r\n\r\n") + 4 : length])
            del buf[:length]
            if status != 200:
                raise RuntimeError(f"{method} {target}: {status} {payload[:200]!r}")
            return payload

        m = mac(i)
        async with stream:
            script = await call("GET", f"/dispatch?mac={m}")
            disc = script.split(b"token=")[1].split()[0].decode()
            bearer = f"Authorization: Bearer {disc}\r\n"
            await call("POST", "/api/discover", {"mac": m, **inventory}, bearer)
            install = {"mac": m, "hostname": f"n{i}", "role": "worker"}
            await call("POST", "/api/install", install, admin)
            script = await call("GET", f"/dispatch?mac={m}")
            cb = script.split(b"token=")[1].split()[0].decode()
            await call("GET", f"/kickstart/install.ks?mac={m}&token={cb}")
            bearer = f"Authorization: Bearer {cb}\r\n"
            for phase, pct in [("pre", 0), ("partition", 0), ("packages", 50), ("post", 100)]:
                reply = await call(
                    "POST", "/api/progress", {"mac": m, "phase": phase, "percent": pct}, bearer
                )
            assert json.loads(reply)["state"] == "installed"
            assert b"install.ks" not in await call("GET", f"/dispatch?mac={m}")

    async def run() -> float:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(machines):
                nursery.start_soon(machine, i)
        return time.perf_counter() - start

    return trio.run(run)


def storm(port: int, admin_token: str, machines: int, cpus: set[int]) -> float:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        wall: float = pool.apply(_storm, (port, admin_token, machines, cpus))
        return wall


# --- main -------------------------------------------------------------------------------------


def main(duration: float, rounds: int, machines: int, client: str) -> None:
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    server_cpus, load_cpus = split_cpus()
    print(f"# client={client} server_cpus={server_cpus} load_cpus={load_cpus}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, port = start_server(work, server_cpus)
        try:
            loader = Loader(port, proc.pid, load_cpus, client, work)
            unknown = [f"/dispatch?mac={mac(i)}" for i in range(100_000, 100_500)]
            loader.run(["/healthz"], 1)  # warm-up
            static, dyn = loader.compare(unknown, duration, rounds)
            emit("dispatch_rps_c50", dyn["rps"], "req/s", static["rps"])
            emit("dispatch_p99_c50", dyn["p99_ms"], "ms", static["p99_ms"])
            emit("dispatch_server_cpu_per_req", dyn["cpu_us"], "us", static["cpu_us"])
            token = (work / "srv" / "admin-token").read_text().strip()
            emit(f"boot_storm_{machines}_machines", storm(port, token, machines, load_cpus), "s")
            installed = [f"/dispatch?mac={mac(i)}" for i in range(machines)]
            static, known = loader.compare(installed, duration, rounds)
            emit("dispatch_installed_rps_c50", known["rps"], "req/s", static["rps"])
            emit("dispatch_installed_p99_c50", known["p99_ms"], "ms", static["p99_ms"])
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of each pair")
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    main(args.duration, args.rounds, args.machines, args.client)
