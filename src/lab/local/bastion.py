"""The standalone lab-bastion, and where a bastion on this box keeps its admin token."""

from __future__ import annotations

from pathlib import Path

from lab.bastion.config import load
from lab.local.daemonize import Standalone, local_url


def standalone() -> Standalone:
    """The standalone bastion, from its own settings (the same LAB_BASTION_* variables)."""
    cfg = load()
    return Standalone(
        name="lab-bastion",
        module="lab.bastion.main",
        data_dir=cfg.data_path,
        data_env="LAB_BASTION_DATA_DIR",
        url=local_url("http", cfg.host, cfg.port),
    )


def admin_token_file() -> Path:
    """The admin token of the bastion configured on this box (in its data dir)."""
    return load().data_path / "admin-token"
