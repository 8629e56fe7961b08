"""labctl doctor: one line per check, with a hint for each failure."""

from __future__ import annotations


def run_doctor() -> None:
    """Run every check, print one line each, exit 1 if any failed."""
    from lab.cli.health import is_healthy
    from lab.cli.settings import config_path, load_settings
    from lab.errors import LabError

    failed = False

    def report(ok: bool, what: str, hint: str = "") -> None:
        nonlocal failed
        failed = failed or not ok
        print(f"[{'ok' if ok else 'FAIL'}] {what}" + ("" if ok or not hint else f" (hint: {hint})"))

    try:
        settings = load_settings()
    except LabError as exc:
        report(False, f"config {config_path()}: {exc.message}", "fix or remove the file")
        raise SystemExit(1) from None
    report(True, f"config {config_path()} readable")
    from lab.cli.settings import home

    healthy = is_healthy(settings.server, cafile=home() / "ca.pem")
    report(
        healthy,
        f"labd at {settings.server} " + ("healthy" if healthy else "not reachable or unhealthy"),
        "start it with `labctl init labd standalone start` or set `labctl config set server URL`",
    )
    if failed:
        raise SystemExit(1)
