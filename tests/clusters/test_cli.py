"""labctl clusters create / describe / describe cluster/NAME against a real labd and agents:
the steps are printed as they run, describe shows them, -o json carries no secret; a create
refused by preflight lists every problem of every node and changes nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio

from tests.clusters.rig import V1, cluster_lab, free_port, k3s_program


async def test_create_and_describe_through_labctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(180):
        async with cluster_lab(tmp_path, monkeypatch, ["s1", "a1"]) as lab:
            lab.artifacts.add("k3s", V1, "amd64", k3s_program(V1, lab.record))
            port = str(free_port())
            done = await lab.labctl(
                "clusters", "create", "c1", "--server", "server/s1", "--agent", "server/a1",
                "--version", V1, "--api-address", "127.0.0.1", "--api-port", port,
            )  # fmt: skip
            out = done.stdout.decode()
            assert done.returncode == 0, done.stderr
            assert "preflight server/s1: done" in out and "ready server/a1: done" in out
            assert "cluster c1: create done" in out

            described = await lab.labctl("describe", "cluster/c1")
            text = described.stdout.decode()
            assert described.returncode == 0, described.stderr
            assert "create" in text and "succeeded" in text and "verify-ca server/s1: done" in text
            as_json = await lab.labctl("clusters", "describe", "c1", "-o", "json")
            data = json.loads(as_json.stdout)
            assert data["operations"][0]["status"] == "succeeded"

            token = (await lab.secret("cluster/c1/token")).decode()
            kubeconfig = (await lab.secret("cluster/c1/kubeconfig")).decode()
            key_data = next(
                line.split(":", 1)[1].strip()
                for line in kubeconfig.splitlines()
                if "client-key-data" in line
            )
            for shown in (out, done.stderr.decode(), text, as_json.stdout.decode()):
                assert token.rpartition(":")[2] not in shown
                assert key_data[:40] not in shown


async def test_preflight_lists_every_problem_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(180), socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        async with cluster_lab(tmp_path, monkeypatch, ["s1", "a1"]) as lab:
            # no artifact of this version at all, and the API port is taken on the server
            done = await lab.labctl(
                "clusters", "create", "c1", "--server", "server/s1", "--agent", "server/a1",
                "--version", V1, "--api-address", "127.0.0.1", "--api-port", port,
            )  # fmt: skip
            assert done.returncode == 1
            err = done.stderr.decode()
            assert "preflight failed, nothing was changed" in err
            assert f"server/s1: port {port} is in use" in err
            assert f"server/s1: no k3s {V1} for amd64" in err
            assert f"server/a1: no k3s {V1} for amd64" in err
            for node in ("s1", "a1"):
                assert list(lab.root(node).iterdir()) == []  # nothing written on any node
            assert not [c for c in lab.calls() if "systemctl" in c]
