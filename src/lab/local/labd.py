"""The standalone labd: one labd on this box, on SQLite, files in its data dir."""

from __future__ import annotations

from lab.labd.config import load_labd_config
from lab.labd.storage import prepare_data_dir
from lab.local.daemonize import Standalone, local_url, start_healthy


def standalone() -> Standalone:
    """The standalone labd, from labd's own settings (the same LABD_* variables)."""
    cfg = load_labd_config()
    return Standalone(
        name="labd",
        module="lab.labd.main",
        data_dir=cfg.data_path,
        data_env="LABD_DATA_DIR",
        url=local_url("https", cfg.host, cfg.port),
        cafile=cfg.data_path / "ca.pem",
    )


def start(daemon: Standalone, *, wait: float) -> int:
    """Prepare labd's data dir, start it in the background and wait until it is healthy.

    Returns its pid. Raises DataDirUnusable, Conflict (already running) and Unavailable (it
    exited, or did not become healthy within ``wait`` seconds).
    """
    prepare_data_dir(daemon.data_dir)
    return start_healthy(daemon, wait=wait)
