"""labctl doctor: one line per check, with a hint for each failure or warning.

Checks, in order: the config file; labd reachable and healthy; our certificate (valid, days
left); clock skew against labd (its HTTP ``Date``); labd's CA (``~/.labctl/ca.pem``, the
``ca_fingerprint`` setting and what labd serves at ``/api/ca`` agree); the bastion (setting
``bastion``); dnsmasq installed (informational); the default ports of labd and lab-bastion on
this box (free, or held by our daemons). Only ``FAIL`` lines make the exit status 1.

Standard library HTTP only: it must work when httpx or labd's answers are what is broken.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

CERT_WARN_DAYS = 14
SKEW_WARN_SECONDS = 30.0
LABD_PORT = 3100
BASTION_PORT = 8080
DNSMASQ_PATHS = ("/usr/sbin/dnsmasq",)
TIMEOUT = 3.0


class Report:
    """Prints ``[ok]``/``[warn]``/``[FAIL]``/``[info]`` lines; remembers whether one failed."""

    def __init__(self) -> None:
        self.failed = False

    def line(self, level: str, what: str, hint: str = "") -> None:
        self.failed = self.failed or level == "FAIL"
        shown = f" (hint: {hint})" if hint and level in ("FAIL", "warn") else ""
        print(f"[{level}] {what}{shown}", flush=True)

    def ok(self, what: str) -> None:
        self.line("ok", what)

    def warn(self, what: str, hint: str) -> None:
        self.line("warn", what, hint)

    def fail(self, what: str, hint: str) -> None:
        self.line("FAIL", what, hint)

    def info(self, what: str) -> None:
        self.line("info", what)


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def fetch(
    url: str, *, cafile: Path | None = None, verify: bool = True, check_hostname: bool = True
) -> Answer:
    """GET ``url``; https trusts only ``cafile`` (or nothing is checked with verify=False).

    ``check_hostname=False`` is for a joined bastion, whose labd certificate names no host.
    Raises OSError (urllib's errors included) when there is no HTTP answer at all.
    """
    context = None
    if url.startswith("https:"):
        if verify:
            context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            context.check_hostname = check_hostname
        else:
            context = ssl._create_unverified_context()  # noqa: S323 - identifies a port's owner
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as resp:  # noqa: S310
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read())


def _normal(fingerprint: str) -> str:
    return fingerprint.lower().removeprefix("sha256:").replace(":", "")


def run_doctor() -> None:
    """Run every check, print one line each, exit 1 if any failed."""
    from lab.client.contexts import identity_dir
    from lab.client.home import config_path
    from lab.client.settings import load_settings
    from lab.errors import LabError

    report = Report()
    try:
        settings = load_settings()
    except LabError as exc:
        report.fail(f"config {config_path()}: {exc.message}", "fix or remove the file")
        raise SystemExit(1) from None
    report.ok(f"config {config_path()} readable")
    identity = identity_dir()
    cafile = identity / "ca.pem"
    labd = check_labd(report, settings.server, cafile)
    check_certificate(report, identity / "cert.pem")
    if labd is not None:
        check_clock(report, labd)
    check_ca(report, settings.server, cafile, settings.ca_fingerprint, reachable=labd is not None)
    check_bastion(report, settings.bastion, cafile)
    check_dnsmasq(report)
    check_port(report, "labd", LABD_PORT, "https")
    check_port(report, "lab-bastion", BASTION_PORT, "http")
    if report.failed:
        raise SystemExit(1)


def check_labd(report: Report, server: str, cafile: Path) -> Answer | None:
    """labd's /healthz; its answer (for the clock check) when it is healthy."""
    start_hint = "start it (labctl init labd standalone start) or set: labctl config set server URL"
    if server.startswith("https:") and not cafile.exists():
        report.fail(f"labd at {server}: no CA to trust ({cafile} missing)", "labctl login")
        return None
    try:
        answer = fetch(server.rstrip("/") + "/healthz", cafile=cafile)
    except ssl.SSLError as exc:
        report.fail(f"labd at {server}: TLS failed ({exc.reason})", "labctl login again")
        return None
    except (OSError, ValueError) as exc:
        report.fail(f"labd at {server} not reachable: {_reason(exc)}", start_hint)
        return None
    if answer.status != 200:
        report.fail(f"labd at {server} unhealthy (HTTP {answer.status})", "see its log")
        return None
    report.ok(f"labd at {server} reachable and healthy")
    return answer


def check_certificate(report: Report, path: Path) -> None:
    from lab import pki
    from lab.errors import LabError

    try:
        info = pki.cert_info(path.read_bytes())
    except OSError:
        report.fail(f"no certificate at {path}", "labctl login --server URL --token TOKEN")
        return
    except LabError as exc:
        report.fail(f"certificate {path}: {exc.message}", "labctl login again")
        return
    now = datetime.now(UTC)
    days = (info.not_after - now).total_seconds() / 86400
    what = f"certificate {info.subject} (serial {info.serial})"
    if info.not_before > now:
        report.fail(f"{what} is not valid before {info.not_before:%Y-%m-%d}", "check the clock")
    elif days <= 0:
        report.fail(f"{what} expired on {info.not_after:%Y-%m-%d}", "labctl login again")
    elif days < CERT_WARN_DAYS:
        report.warn(f"{what} expires in {days:.0f} days", "renew it: labctl login with a new token")
    else:
        report.ok(f"{what} valid, expires in {days:.0f} days")


def check_clock(report: Report, answer: Answer) -> None:
    date = answer.headers.get("Date")
    if not date:
        report.warn("clock skew unknown: labd sent no Date header", "compare the clocks by hand")
        return
    skew = (datetime.now(UTC) - parsedate_to_datetime(date)).total_seconds()
    what = f"clock skew against labd {skew:+.0f} s"
    if abs(skew) > SKEW_WARN_SECONDS:
        report.warn(what, "run NTP (chrony, systemd-timesyncd) here and on labd")
    else:
        report.ok(what)


def check_ca(
    report: Report, server: str, cafile: Path, configured: str, *, reachable: bool
) -> None:
    from lab import pki

    try:
        local = {_normal(c.fingerprint()) for c in pki.load_ca_bundle(cafile.read_bytes())}
    except (OSError, ValueError) as exc:
        report.fail(f"CA bundle {cafile} unreadable: {_reason(exc)}", "labctl login")
        return
    hint = "labctl login again with --ca-fingerprint from `labctl ca show` (ask labd's admin)"
    if not configured:
        report.warn(
            f"no ca_fingerprint set; {cafile} not checked", "labctl config set ca_fingerprint"
        )
        return
    if _normal(configured) not in local:
        report.fail(f"CA {configured} (ca_fingerprint) is not in {cafile}", hint)
        return
    if not reachable:
        report.warn(f"CA {configured} matches {cafile}; labd not asked", "see the labd line")
        return
    try:
        answer = fetch(server.rstrip("/") + "/api/ca", cafile=cafile)
        served = {_normal(c.fingerprint()) for c in pki.load_ca_bundle(answer.body)}
    except (OSError, ValueError) as exc:
        report.fail(f"labd's CA bundle (/api/ca) unreadable: {_reason(exc)}", "see labd's log")
        return
    if _normal(configured) not in served:
        report.fail(f"labd does not serve CA {configured} at /api/ca", hint)
        return
    report.ok(f"CA {configured} matches {cafile} and labd's /api/ca")


def check_bastion(report: Report, url: str, cafile: Path) -> None:
    try:
        # An https bastion is a joined one, on its operator port: labd's CA vouches for it.
        answer = fetch(url.rstrip("/") + "/healthz", cafile=cafile, check_hostname=False)
    except (OSError, ValueError) as exc:
        report.warn(
            f"bastion at {url} not reachable: {_reason(exc)}",
            "start lab-bastion or set: labctl config set bastion URL (ignore without PXE)",
        )
        return
    if answer.status != 200:
        report.warn(f"bastion at {url} unhealthy (HTTP {answer.status})", "labctl logs bastion")
        return
    report.ok(f"bastion at {url} reachable and healthy")


def check_dnsmasq(report: Report) -> None:
    import shutil

    found = shutil.which("dnsmasq") or next((p for p in DNSMASQ_PATHS if Path(p).exists()), None)
    if found:
        report.info(f"dnsmasq installed ({found}); the bastion needs it for DHCP/TFTP")
    else:
        report.info(
            "dnsmasq not installed; needed only on the bastion's box (apt-get install dnsmasq)"
        )


def check_port(report: Report, daemon: str, port: int, scheme: str) -> None:
    """Free, or answered by one of our daemons (its /healthz says status ok); else a warning."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
            pass
    except OSError:
        report.ok(f"port {port} ({daemon}'s default) free on this box")
        return
    try:
        answer = fetch(f"{scheme}://127.0.0.1:{port}/healthz", verify=False)
        ours = answer.status == 200 and json.loads(answer.body).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        ours = False
    if ours:
        report.ok(f"port {port} held by {daemon}")
    else:
        report.warn(
            f"port {port} ({daemon}'s default) is held by another program",
            f"find it with `ss -ltnp 'sport = :{port}'` or give {daemon} another port",
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
