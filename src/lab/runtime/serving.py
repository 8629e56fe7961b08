"""Serve an ASGI app under trio with hypercorn, following the task_status convention."""

from __future__ import annotations

from typing import Any

import trio


async def serve_app(
    app: Any,
    host: str,
    port: int,
    shutdown: trio.Event,
    graceful_timeout: float = 5.0,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (0 picks a free port) until ``shutdown`` is set.

    ``task_status.started((host, port))`` is called once the socket is bound. On shutdown,
    open requests get ``graceful_timeout`` seconds, then are cancelled.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = None

    class _Status:
        def started(self, binds: list[str] | None = None) -> None:
            bound = (binds or [""])[0]
            hostport = bound.split("://", 1)[-1]
            h, _, p = hostport.rpartition(":")
            task_status.started((h.strip("[]"), int(p)))

    await serve(app, config, shutdown_trigger=shutdown.wait, task_status=_Status())  # type: ignore[arg-type]
