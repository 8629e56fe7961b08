"""Config loading: defaults < file < environment, typed values, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.labd.config import load_labd_config


def test_defaults_without_file_or_env(tmp_path: Path) -> None:
    cfg = load_labd_config({"LABD_CONFIG": str(tmp_path / "absent.yaml"), "HOME": str(tmp_path)})
    assert cfg.port == 3100
    assert cfg.effective_database_url == f"sqlite:///{cfg.data_path / 'labd.db'}"


def test_file_then_env_precedence(tmp_path: Path) -> None:
    f = tmp_path / "labd.yaml"
    f.write_text("port: 4000\nlog_format: json\nserver_names: [a.example, b.example]\n")
    env = {"LABD_CONFIG": str(f), "LABD_PORT": "4100"}
    cfg = load_labd_config(env)
    assert cfg.port == 4100
    assert cfg.log_format == "json"
    assert cfg.server_names == ("a.example", "b.example")


def test_database_url_alias_and_prefixed_wins(tmp_path: Path) -> None:
    base = {"LABD_CONFIG": str(tmp_path / "none.yaml")}
    assert (
        load_labd_config({**base, "DATABASE_URL": "sqlite:///x.db"}).database_url
        == "sqlite:///x.db"
    )
    both = {**base, "DATABASE_URL": "sqlite:///x.db", "LABD_DATABASE_URL": "sqlite:///y.db"}
    assert load_labd_config(both).database_url == "sqlite:///y.db"


def test_unknown_key_and_bad_type(tmp_path: Path) -> None:
    f = tmp_path / "labd.yaml"
    f.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'prot'") as info:
        load_labd_config({"LABD_CONFIG": str(f)})
    assert "port" in info.value.details["valid_keys"]
    with pytest.raises(ConfigError, match="LABD_PORT"):
        load_labd_config({"LABD_CONFIG": str(tmp_path / "n.yaml"), "LABD_PORT": "many"})
