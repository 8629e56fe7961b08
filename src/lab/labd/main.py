"""labd's entry point: read config, build dependencies, open the nursery, serve."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import trio

from lab.errors import LabError
from lab.labd.config import LabdConfig, load_labd_config

log = logging.getLogger("labd")


def prepare_data_dir(path: Path) -> None:
    """Create the data dir (0700) and check it is writable; raise LabError with one line."""
    from lab.errors import Unavailable

    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise Unavailable(f"cannot create data dir {path}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise Unavailable(f"data dir {path} is not writable")


async def serve_labd(
    config: LabdConfig,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run labd until ``shutdown`` is set; reports ``(host, port)`` once listening.

    Raises LabError subclasses for unusable config (data dir, database, schema too new).
    """
    from lab.labd.app import create_app
    from lab.labd.context import LabdContext
    from lab.runtime.serving import serve_app
    from lab.store import open_store

    prepare_data_dir(config.data_path)
    async with open_store(config.effective_database_url) as store:
        context = LabdContext(config=config, store=store)
        app = create_app(context)
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(
                serve_app,
                app,
                config.host,
                config.port,
                shutdown,
                config.shutdown_grace,
            )
            log.info("labd listening on %s:%d (database %s)", addr[0], addr[1], store.url)
            task_status.started(addr)


async def _run(config: LabdConfig) -> None:
    from lab.runtime.shutdown import watch_signals

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, shutdown)
        await serve_labd(config, shutdown=shutdown)
        nursery.cancel_scope.cancel()


def main() -> None:
    from lab.runtime.entry import run_daemon
    from lab.runtime.logs import setup_logging

    try:
        config = load_labd_config()
    except LabError as exc:
        print(f"labd: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    setup_logging(config.log_level, config.log_format)
    run_daemon("labd", _run, config)


if __name__ == "__main__":
    main()
