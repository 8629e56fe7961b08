"""A stand-in ``k3s`` for tests (shipped only under tests/): what the real steps drive.

Installed on a node as an executable that calls :func:`main` with its version and the file
that records every call. ``k3s server|agent --config FILE`` reads the config file labd wrote
and refuses what k3s refuses: an unknown flag or config key, a token not in the secure form,
a joining node whose token's CA hash is not the served CA's (like k3s's
"token CA hash does not match the Cluster CA certificate hash"), a wrong token secret, a
server whose critical flags differ from the first server's. The first server (cluster-init)
serves the kmock API with k3s's /cacerts over TLS from the CA labd placed in its data dir,
on ``https-listen-port``, and writes k3s.yaml. Writes ``<data-dir>/standin.ready`` once up.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

KNOWN = {
    "node-name", "token", "data-dir", "cluster-init", "server", "datastore-endpoint",
    "write-kubeconfig", "write-kubeconfig-mode", "https-listen-port", "tls-san",
    "cluster-cidr", "service-cidr", "secrets-encryption", "disable", "flannel-backend",
    "disable-network-policy", "disable-kube-proxy", "node-label",
}  # fmt: skip
AGENT_KNOWN = {"node-name", "token", "data-dir", "server", "node-label"}
CRITICAL = (
    "cluster-cidr", "service-cidr", "flannel-backend", "disable-network-policy",
    "disable-kube-proxy", "secrets-encryption", "disable",
)  # fmt: skip


def fail(message: str) -> None:
    print(f'level=fatal msg="{message}"', file=sys.stderr, flush=True)
    raise SystemExit(1)


def record(path: str, **event: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"t": time.time(), "pid": os.getpid(), **event}) + "\n")


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    if not argv or argv[0] not in ("server", "agent"):
        fail(f"unknown command {argv[:1]}")
    role, rest = argv[0], argv[1:]
    config_path = "/etc/rancher/k3s/config.yaml"
    while rest:
        flag = rest.pop(0)
        if flag in ("--config", "-c") and rest:
            config_path = rest.pop(0)
        else:
            fail(f"flag provided but not defined: {flag}")
    config = yaml.safe_load(Path(config_path).read_text()) or {}
    allowed = KNOWN if role == "server" else AGENT_KNOWN
    for key in config:
        if key not in allowed:
            fail(f"flag provided but not defined: -{key}")
    return role, config


def ready_file(data_dir: Path) -> Path:
    return Path(os.environ.get("STANDIN_READY_FILE") or data_dir / "standin.ready")


def split_token(token: str) -> tuple[str, str]:
    if not token.startswith("K10") or "::server:" not in token:
        fail("token is not in the secure K10 form")
    ca_hash, _, secret = token[3:].partition("::server:")
    return ca_hash, secret


def serve_first(config: dict[str, Any], version: str, data_dir: Path, *, rogue_ca: bool) -> None:
    from lab import pki
    from tests.clusters.k3s_api import K3sAPI

    tls = data_dir / "server" / "tls"
    _, secret = split_token(config["token"])
    # k3s keeps the token it was first started with in <data-dir>/server/token; a data dir
    # left by another cluster refuses this one (k3s-io/k3s#4640).
    kept = data_dir / "server" / "token"
    if kept.exists() and kept.read_text().strip() != config["token"]:
        fail("bootstrap data already found and encrypted with different token")
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(config["token"])
    if rogue_ca:
        # a server that is not the one labd set up: it serves a CA of its own
        rogue = pki.create_ca("someone else's cluster")
        (tls / "server-ca.crt").write_bytes(rogue.cert_pem())
        (tls / "server-ca.key").write_bytes(rogue.key_pem())
    ca_pem = (tls / "server-ca.crt").read_bytes()
    ca = pki.CAMaterial.from_pem(ca_pem, (tls / "server-ca.key").read_bytes())
    key = pki.generate_key()
    cert, _ = pki.issue_server_cert(ca, pki.make_csr(key, "k3s"), ["localhost"], ["127.0.0.1"])
    admin_key = pki.generate_key()
    admin_cert, _ = pki.issue_user_cert(ca, pki.make_csr(admin_key, "admin"), "admin")
    for name, pem in (("serving.crt", cert), ("serving.key", key)):
        (tls / name).write_bytes(pem)
    port = int(config.get("https-listen-port", 6443))
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [
            {
                "name": "default",
                "user": {
                    "client-certificate-data": base64.b64encode(admin_cert).decode(),
                    "client-key-data": base64.b64encode(admin_key).decode(),
                },
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
    }
    out = Path(config["write-kubeconfig"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(kubeconfig))
    out.chmod(0o600)

    async def run() -> None:
        import aiohttp.test_utils

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        handler = K3sAPI(
            tokens=frozenset(),
            git_version=version,
            ca_pem=ca_pem,
            secret=secret,
            critical={k: config.get(k) for k in CRITICAL},
            state=data_dir / "server" / "standin-nodes.json",
        )
        handler.load()
        handler.put_node(config["node-name"], version)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls / "serving.crt", tls / "serving.key")
        ctx.load_verify_locations(cadata=ca_pem.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
        async with handler:
            server = aiohttp.test_utils.RawTestServer(handler, host="127.0.0.1", port=port)
            await server.start_server(ssl=ctx)
            ready_file(data_dir).write_text("ok")
            try:
                await stop.wait()
            finally:
                await server.close()

    asyncio.run(run())


def join(role: str, config: dict[str, Any], version: str, data_dir: Path) -> None:
    ca_hash, secret = split_token(config["token"])
    server = config["server"]
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    served = urllib.request.urlopen(f"{server}/cacerts", context=insecure, timeout=10).read()
    got = hashlib.sha256(served).hexdigest()
    if got != ca_hash:
        fail(f"token CA hash does not match the Cluster CA certificate hash: {ca_hash} != {got}")
    verified = ssl.create_default_context(cadata=served.decode())
    body = {
        "node": config["node-name"],
        "role": role,
        "secret": secret,
        "version": version,
        "critical": {k: config.get(k) for k in CRITICAL},
    }
    req = urllib.request.Request(
        f"{server}/v1-k3s/join",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, context=verified, timeout=10).read()
    except urllib.error.HTTPError as exc:
        fail(json.loads(exc.read()).get("message", str(exc)))
    ready_file(data_dir).write_text("ok")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        signal.pause()


def main(*, version: str, record_to: str, rogue_ca: bool = False) -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--version"]:
        print(f"k3s version {version}")
        return
    role, config = parse(argv)
    data_dir = Path(config.get("data-dir", "/var/lib/rancher/k3s"))
    data_dir.mkdir(parents=True, exist_ok=True)
    ready_file(data_dir).unlink(missing_ok=True)
    first = role == "server" and "server" not in config
    record(record_to, node=config.get("node-name"), role=role, version=version, event="start",
           first=first)  # fmt: skip
    try:
        if role == "server" and "server" not in config:
            serve_first(config, version, data_dir, rogue_ca=rogue_ca)
        else:
            join(role, config, version, data_dir)
    finally:
        record(record_to, node=config.get("node-name"), role=role, version=version, event="stop")
