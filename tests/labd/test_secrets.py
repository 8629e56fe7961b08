"""labd's secrets store end to end: what reaches the database file, `labd secrets rotate` as a
real process, and a labd started with the wrong key-encryption key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from lab import pki
from lab.errors import ConfigError
from lab.labd.config import LabdConfig
from lab.labd.secrets import SecretsStore, key_encryption_key
from lab.store import open_store
from tests.e2e.daemons import clean_env
from tests.labd.harness import running_labd

TOKEN = "k3s-join-token-0b1d6e7c"
KEY_LINE = "client-key-data: TFMwdExTMUNSVWRKVGlCRlF5QlFVa2xXUVZSRklFdEZXUzB0TFMwdA=="
KUBECONFIG = f"apiVersion: v1\nusers:\n- user:\n    {KEY_LINE}\n    token: {TOKEN}\n".encode()


def database_bytes(data_dir: Path) -> bytes:
    """labd.db with its WAL and shared-memory files: everything SQLite wrote."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("labd.db*")))


async def put_and_stop(tmp_path: Path, **settings: object) -> Path:
    async with running_labd(tmp_path, **settings) as labd:
        assert labd.context is not None
        await labd.context.secrets.put("cluster/lab/kubeconfig", KUBECONFIG)
        await labd.context.secrets.put("cluster/lab/token", TOKEN.encode())
        assert await labd.context.secrets.get("cluster/lab/token") == TOKEN.encode()
        return labd.data_dir


async def read_back(config: LabdConfig, name: str) -> bytes:
    passphrase = (config.data_path / "ca-passphrase").read_bytes()
    kek = key_encryption_key(config.secrets_key_file, passphrase)
    async with open_store(config.effective_database_url) as store:
        return await SecretsStore(store.secrets, kek).get(name)


async def test_secrets_are_not_readable_in_the_database_file(tmp_path: Path) -> None:
    with trio.fail_after(60):
        data_dir = await put_and_stop(tmp_path)
    raw = database_bytes(data_dir)
    assert b"cluster/lab/kubeconfig" in raw  # the names are there: the grep does see rows
    for needle in (TOKEN, KEY_LINE, KEY_LINE.split(": ")[1], "apiVersion: v1"):
        assert needle.encode() not in raw, needle


def run_labd(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = clean_env(
        LABD_DATA_DIR=str(data_dir), LABD_CONFIG=str(data_dir / "absent.yaml"), **env
    )
    return subprocess.run(
        [sys.executable, "-m", "lab.labd.main", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_labd_secrets_rotate_keeps_values_readable(tmp_path: Path) -> None:
    with trio.fail_after(60):
        data_dir = await put_and_stop(tmp_path)
    async with open_store(f"sqlite:///{data_dir}/labd.db") as store:
        before = {r.name: r for r in await store.secrets.list()}
    done = await trio.to_thread.run_sync(run_labd, data_dir, "secrets", "rotate")
    assert done.returncode == 0, done.stderr
    assert "2 values re-sealed, 1 old data keys dropped" in done.stdout
    async with open_store(f"sqlite:///{data_dir}/labd.db") as store:
        after = {r.name: r for r in await store.secrets.list()}
        entries = await store.audit.list(action="secrets:rotate")
    assert {r.key_id for r in after.values()} != {r.key_id for r in before.values()}
    assert [e.user for e in entries] == ["labd"]
    assert TOKEN not in str(entries[0].details)
    config = LabdConfig(data_dir=str(data_dir))
    assert await read_back(config, "cluster/lab/kubeconfig") == KUBECONFIG
    # A labd started afterwards reads the re-sealed values.
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            assert await labd.context.secrets.get("cluster/lab/token") == TOKEN.encode()


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def key_file(path: Path, mode: int = 0o600) -> Path:
    path.write_bytes(os.urandom(32))
    path.chmod(mode)
    return path


async def test_a_labd_with_another_key_refuses_to_start(tmp_path: Path) -> None:
    with trio.fail_after(60):
        await put_and_stop(tmp_path)
        other = key_file(tmp_path / "other.key")
        refused: list[BaseException] = []
        try:
            async with running_labd(tmp_path, secrets_key_file=str(other)):
                pass
        except* pki.WrongSecretsKey as group:
            refused.extend(leaves(group))
    assert len(refused) == 1
    assert "wrapped by key-encryption key" in str(refused[0])


async def test_changing_the_key_file_needs_rotate_with_the_previous_key(tmp_path: Path) -> None:
    with trio.fail_after(60):
        data_dir = await put_and_stop(tmp_path)
    new = key_file(tmp_path / "secrets.key")
    refused = await trio.to_thread.run_sync(
        lambda: run_labd(data_dir, "secrets", "rotate", LABD_SECRETS_KEY_FILE=str(new))
    )
    assert refused.returncode == 1
    assert "key-encryption key" in refused.stderr and "LABD_SECRETS_KEY_FILE" in refused.stderr
    done = await trio.to_thread.run_sync(
        lambda: run_labd(
            data_dir,
            "secrets",
            "rotate",
            "--previous-key-file",
            str(data_dir / "ca-passphrase"),
            LABD_SECRETS_KEY_FILE=str(new),
        )
    )
    assert done.returncode == 0, done.stderr
    config = LabdConfig(data_dir=str(data_dir), secrets_key_file=str(new))
    assert await read_back(config, "cluster/lab/token") == TOKEN.encode()


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    loose = key_file(tmp_path / "loose.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        key_encryption_key(str(loose), b"")


async def test_labd_moves_power_passwords_sealed_in_their_rows_at_start(tmp_path: Path) -> None:
    from lab.store import PowerSetting

    with trio.fail_after(90):
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            key = labd.context.audit_keys.chain.derive(pki.SEAL_LABEL)
            await labd.context.store.power.set(
                PowerSetting(
                    target="server/node1",
                    driver="ipmi",
                    settings={"host": "10.0.0.5"},
                    sealed=pki.seal(key, "server/node1", "bmc-pass-77"),
                )
            )
        async with running_labd(tmp_path) as labd:
            assert labd.context is not None
            row = await labd.context.store.power.get("server/node1")
            assert row.sealed == "secrets"
            secret = await labd.context.secrets.get("power/server/node1/password")
            assert secret == b"bmc-pass-77"
            entries = await labd.context.store.audit.list(action="secrets:move-power")
            assert [(e.user, e.details["moved"]) for e in entries] == [("labd", 1)]
            assert "bmc-pass-77" not in str(entries)
        raw = database_bytes(labd.data_dir)
    assert b"bmc-pass-77" not in raw
