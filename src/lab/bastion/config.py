"""lab-bastion settings: defaults < YAML file (``--config``) < ``LAB_BASTION_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path

from attrs import frozen

from lab.errors import ConfigError
from lab.runtime.config import default_data_dir, load_config

ENV_PREFIX = "LAB_BASTION_"
FEDORA_REPO = "https://dl.fedoraproject.org/pub/fedora/linux/releases/42/Everything/x86_64/os"


@frozen(kw_only=True)
class BastionConfig:
    host: str = "0.0.0.0"  # noqa: S104 - PXE clients reach the bastion over the LAN
    """HTTP listen address."""
    port: int = 8080
    """HTTP port of /dispatch, /kickstart, /api, /wheelhouse (``LAB_BASTION_PORT``)."""
    data_dir: str = ""
    """Database, admin token, wheelhouse, TFTP root, dnsmasq files. Empty: the default."""
    database_url: str = ""
    """Empty: ``sqlite:///<data dir>/bastion.db``."""
    operator_port: int = 8443
    """TLS port of the operator API for labd users' certificates; a joined bastion only."""
    public_url: str = ""
    """Base URL machines use to reach this bastion; empty: ``http://<interface ip>:<port>``."""
    repo: str = FEDORA_REPO
    """Fedora installation tree (``inst.repo``), with ``images/pxeboot/`` below it."""
    interface: str = ""
    """The only interface dnsmasq answers DHCP on; empty: HTTP only, no DHCP/TFTP."""
    no_dhcp: bool = False
    """Never start dnsmasq, even with an interface."""
    dhcp_mode: str = "proxy"
    """``proxy`` (beside a home router's DHCP) or ``dhcp`` (own range on an isolated LAN)."""
    dhcp_range: str = ""
    """dhcp mode: ``start,end[,lease]`` (dnsmasq ``dhcp-range``)."""
    dnsmasq: str = "dnsmasq"
    ipxe_dir: str = "/usr/lib/ipxe"
    labd_url: str = ""
    """labd to enrol installed machines with; empty: agent enrolment is skipped."""
    labd_ca_fingerprint: str = ""
    """SHA256 fingerprint of labd's CA that installed agents pin when they enrol (a joined
    bastion knows it already)."""
    join_token: str = ""
    """A reusable agent join token of that labd; unused once ``lab-bastion join`` linked the
    bastion to labd, which then creates a one-time token per install."""
    join_ttl: float = 7200.0
    """Seconds the one-time agent token of an install lives at most (labd allows up to a day);
    the bastion revokes it earlier when the install ends."""
    timeout_boot: float = 1200.0
    timeout_pre: float = 900.0
    timeout_partition: float = 900.0
    timeout_packages: float = 3600.0
    timeout_post: float = 1800.0
    timeout_firstboot: float = 1800.0
    watchdog_interval: float = 30.0
    audit_witness_interval: float = 3600.0
    """A joined bastion keeps labd's newest signed audit checkpoint in ``<data dir>/labd/``
    every this many seconds (a witness, see docs/rbac-audit.md); 0 disables."""
    handshake_timeout: float = 10.0
    """Seconds from accept to a finished TLS handshake, when serving TLS (0: no limit)."""
    idle_timeout: float = 10.0
    """Seconds a connection may wait with no request in flight, before its first request and
    between keep-alive requests, before the bastion closes it (0: no limit)."""
    max_unauthenticated_per_address: int = 64
    """Concurrent connections one source address may hold (every plain-HTTP connection is
    unauthenticated); more are closed at accept (0: no limit)."""
    log_level: str = "info"
    log_format: str = "text"
    """``text`` or ``json`` (``LAB_BASTION_LOG_FORMAT``, ``--log-format``)."""
    log_buffer: int = 1000
    """Log records kept in memory for ``GET /api/logs`` (``labctl logs bastion``)."""

    @property
    def data_path(self) -> Path:
        return (
            Path(self.data_dir) if self.data_dir else default_data_dir("lab-bastion", "lab-bastion")
        )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'bastion.db'}"

    @property
    def timeouts(self) -> dict[str, float]:
        return {
            "boot": self.timeout_boot,
            "pre": self.timeout_pre,
            "partition": self.timeout_partition,
            "packages": self.timeout_packages,
            "post": self.timeout_post,
            "firstboot": self.timeout_firstboot,
        }

    def check(self) -> BastionConfig:
        if self.dhcp_mode not in ("proxy", "dhcp"):
            raise ConfigError(f"dhcp_mode must be proxy or dhcp, not {self.dhcp_mode!r}")
        if bool(self.join_token) and not self.labd_url:
            raise ConfigError("join_token needs labd_url")
        if not 0 < self.join_ttl <= 86400:
            raise ConfigError(f"join_ttl must be 1..86400 seconds, not {self.join_ttl:g}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be text or json, not {self.log_format!r}")
        if self.log_buffer < 1:
            raise ConfigError(f"log_buffer must be at least 1, not {self.log_buffer}")
        if self.handshake_timeout < 0 or self.idle_timeout < 0:
            raise ConfigError("handshake_timeout and idle_timeout must be 0 (off) or positive")
        if self.max_unauthenticated_per_address < 0:
            raise ConfigError("max_unauthenticated_per_address must be 0 (off) or positive")
        if self.audit_witness_interval < 0:
            raise ConfigError("audit_witness_interval must be 0 (off) or positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} out of range")
        if not 0 <= self.operator_port <= 65535:
            raise ConfigError(f"operator_port {self.operator_port} out of range")
        return self


def load(file: Path | None = None, environ: dict[str, str] | None = None) -> BastionConfig:
    env = dict(os.environ) if environ is None else environ
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = Path(env[ENV_PREFIX + "CONFIG"])
    return load_config(BastionConfig, file=file, env_prefix=ENV_PREFIX, environ=env).check()
