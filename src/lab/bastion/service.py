"""The bastion's logic over the machine repository: what to boot, what to install, progress.

Transport-free: handlers in :mod:`lab.bastion.app` parse HTTP and call these methods, which
validate every value that may reach a template, write the store, and return scripts or records.
Errors are :mod:`lab.errors` classes the app maps to statuses.

Per-machine data beyond the columns of :class:`lab.model.Machine` lives in ``settings``:
``local_boot``, ``ssh_keys``, ``reprovision``, ``percent``, ``callback_hash`` (SHA-256 of the
installer's callback token; never returned by the API), ``expect_enroll``, ``join_token_id``
(labd's id of the install's live join token, see :mod:`lab.bastion.jointokens`) and
``failed_by``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import attrs
import trio

from lab.bastion import validate as v
from lab.bastion.cache import MISS, MachineCache
from lab.bastion.jointokens import (
    JOIN_TOKEN_ID,
    JoinTokenSource,
    StaticTokenSource,
    binding_of,
    token_live,
)
from lab.bastion.layout import reprovision_plan
from lab.bastion.records import (
    PHASES,
    EnrolledReport,
    InstallRequest,
    Inventory,
    ProgressReport,
    ReprovisionRequest,
)
from lab.bastion.templates import Templates
from lab.bastion.tokens import hash_token, new_token, token_matches
from lab.errors import Conflict, Invalid, LabError, NotFound, Unauthenticated
from lab.model import Machine, MachineState, structure, unstructure
from lab.model.records import now as utcnow
from lab.runtime.metrics import BastionMetrics
from lab.store import MachineRepository, SettingsRepository

log = logging.getLogger("lab.bastion")

DISCOVERY_TOKEN_KEY = "bastion.discovery_token"  # noqa: S105 - a settings key

DEFAULT_TIMEOUTS: dict[str, float] = {
    # From the install script being served until the installer's first callback: kernel and
    # initrd download plus the installer's own start.
    "boot": 1200.0,
    "pre": 900.0,
    "partition": 900.0,
    "packages": 3600.0,
    "post": 1800.0,
    # From the end of the install until the agent enrols (only when a join token was issued).
    "firstboot": 1800.0,
}


class EnrollmentCheck(Protocol):
    """Asks labd whether a machine's agent is enrolled and connected (a joined bastion)."""

    async def agent_online(self, hostname: str) -> bool: ...


def public_view(machine: Machine) -> dict[str, Any]:
    """A machine as the operator API shows it (secrets removed)."""
    data: dict[str, Any] = unstructure(machine)
    data["settings"] = {k: val for k, val in machine.settings.items() if k != "callback_hash"}
    return data


def stalled(
    machines: list[Machine], *, at: datetime, timeouts: Mapping[str, float]
) -> list[tuple[Machine, str]]:
    """Machines whose current phase ran past its timeout, with that phase (pure)."""
    out = []
    for m in machines:
        if m.state is MachineState.INSTALLING:
            phase = m.phase or "boot"
        elif m.state is MachineState.INSTALLED and m.settings.get("expect_enroll"):
            phase = "firstboot"
        else:
            continue
        limit = timeouts.get(phase, DEFAULT_TIMEOUTS.get(phase, 3600.0))
        if (at - m.updated_at).total_seconds() > limit:
            out.append((m, phase))
    return out


class Bastion:
    """One bastion's state machine over the store. Create, then ``await start()``."""

    def __init__(
        self,
        machines: MachineRepository,
        settings: SettingsRepository,
        templates: Templates,
        *,
        join_tokens: JoinTokenSource | None = None,
        enrollment: EnrollmentCheck | None = None,
        labd_url: str | None = None,
        labd_ca_fingerprint: str | None = None,
        timeouts: Mapping[str, float] | None = None,
        join_ttl: timedelta = timedelta(hours=2),
        clock: Callable[[], datetime] = utcnow,
        metrics: BastionMetrics | None = None,
    ) -> None:
        self.machines = machines
        self.settings = settings
        self.templates = templates
        self.join_tokens = join_tokens
        self.enrollment = enrollment
        self.labd_url = labd_url
        self.labd_ca_fingerprint = labd_ca_fingerprint
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
        self.join_ttl = join_ttl
        self.clock = clock
        self.metrics = metrics or BastionMetrics()
        self.discovery_token = ""
        # Read-modify-write of one machine must not interleave with another request's.
        self._lock = trio.Lock()
        self._changed = trio.Event()
        self.version = 0
        # Rows as last read or written; this process is the only writer of its machines.
        self._rows = MachineCache()
        # labd ids of join tokens whose install ended, revoked once the lock is released.
        self._ended_tokens: list[str] = []

    async def start(self) -> None:
        """Load (or create on first start) the discovery token shared by all discovery boots."""
        self.discovery_token = await self.settings.set_if_absent(DISCOVERY_TOKEN_KEY, new_token())

    # --- change notification ----------------------------------------------------------------

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self, after: int) -> int:
        """Wait until some machine changed after ``version`` ``after``; return the new version."""
        while self.version <= after:
            await self._changed.wait()
        return self.version

    async def _save(self, machine: Machine, **changes: Any) -> Machine:
        """Write ``machine`` with ``changes``; a machine leaving the install states drops its
        join token id, queued for :meth:`_end_tokens`."""
        row = attrs.evolve(machine, updated_at=self.clock(), **changes)
        token_id = row.settings.get(JOIN_TOKEN_ID)
        if token_id is not None and not token_live(row):
            settings = {k: val for k, val in row.settings.items() if k != JOIN_TOKEN_ID}
            row = attrs.evolve(row, settings=settings)
        with self._rows.writing(machine.mac):
            saved = await self.machines.upsert(row)
            self._rows.committed(saved.mac, saved)
        if isinstance(token_id, str) and JOIN_TOKEN_ID not in saved.settings:
            self._ended_tokens.append(token_id)
        self._bump()
        return saved

    async def _end_tokens(self) -> None:
        """Revoke at labd the join tokens of installs that ended; call it outside the lock.

        A failure is logged: the token still expires after ``join_ttl``.
        """
        ended, self._ended_tokens = self._ended_tokens, []
        for token_id in ended:
            if self.join_tokens is None:
                log.warning("join token %s outlives its install: no labd to revoke it", token_id)
                continue
            try:
                await self.join_tokens.revoke_agent_token(token_id)
            except LabError as exc:
                log.warning("cannot revoke join token %s at labd: %s", token_id, exc.message)
            else:
                log.info("revoked join token %s: its install ended", token_id)

    async def get(self, raw_mac: str) -> Machine:
        mac = v.normalize_mac(raw_mac)
        m = await self._get_or_none(mac)
        # Absent: ask the store again so the 404 is the store's own NotFound.
        return m if m is not None else await self.machines.get(mac)

    async def _get_or_none(self, mac: str) -> Machine | None:
        cached = self._rows.get(mac)
        if cached is not MISS:
            return cached
        ticket = self._rows.ticket()
        try:
            found: Machine | None = await self.machines.get(mac)
        except NotFound:
            found = None
        self._rows.fill(mac, found, ticket)
        return found

    async def _hostname_owners(self, hostname: str) -> set[str]:
        """MACs of the machines named ``hostname``: from the index, else one full list."""
        owners = self._rows.hostname_owners(hostname)
        if owners is None:
            ticket = self._rows.ticket()
            everyone = await self.machines.list()
            self._rows.load_names(everyone, ticket)
            owners = {m.mac for m in everyone if m.hostname == hostname}
        return owners

    # --- boot time ----------------------------------------------------------------------------

    async def dispatch(self, raw_mac: str) -> str:
        """The iPXE script for the machine with this MAC, by its state.

        Every answer is counted by outcome (``discover``, ``install``, ``reprovision``,
        ``local``; ``error`` when this raises), whichever HTTP path called it.
        """
        try:
            script, outcome = await self._dispatch(raw_mac)
        except Exception:
            self.metrics.pxe_dispatches.labels("error").inc()
            raise
        self.metrics.pxe_dispatches.labels(outcome).inc()
        return script

    async def _dispatch(self, raw_mac: str) -> tuple[str, str]:
        mac = v.normalize_mac(raw_mac)
        m = await self._get_or_none(mac)
        # The one trace of a PXE boot reaching HTTP: operators (and tests) watch for it.
        log.info("dispatch %s (%s)", mac, m.state.value if m else "unknown")
        if m is None:
            return self.templates.ipxe_discover(mac=mac, token=self.discovery_token), "discover"
        method = str(m.settings.get("local_boot", "exit"))
        host = m.hostname or mac
        if m.state is MachineState.QUEUED or (
            m.state is MachineState.INSTALLING and m.phase in (None, "pre")
        ):
            # Before "partition" nothing was written yet, so serving the install again after
            # an interrupted boot is safe; from then on it would loop, so boot the disk.
            outcome = "reprovision" if m.settings.get("reprovision") else "install"
            return await self._dispatch_install(m), outcome
        if m.state is MachineState.FAILED:
            # The failure screen, then the local disk.
            script = self.templates.ipxe_failed(
                mac=mac,
                hostname=host,
                phase=v.display_text(m.phase or "unknown"),
                message=v.display_text(m.message or "no message"),
                method=method,
            )
            return script, "local"
        script = self.templates.ipxe_local(
            mac=mac, hostname=host, state=m.state.value, method=method
        )
        return script, "local"

    async def _dispatch_install(self, m: Machine) -> str:
        assert m.hostname and m.role and m.disk
        token = new_token()
        async with self._lock:
            await self._save(
                m,
                state=MachineState.INSTALLING,
                phase=None,
                message="install script served",
                settings={**m.settings, "callback_hash": hash_token(token), "percent": 0},
            )
        return self.templates.ipxe_install(
            mac=m.mac,
            token=token,
            hostname=m.hostname,
            role=m.role,
            disk=m.disk,
            reprovision=bool(m.settings.get("reprovision")),
        )

    def _check_discovery(self, token: str | None) -> None:
        if token is None or not token_matches(token, hash_token(self.discovery_token)):
            raise Unauthenticated("discovery token missing or wrong")

    async def _installer(self, raw_mac: str, token: str | None) -> Machine:
        """The machine a callback token belongs to: 404 unknown MAC, 401 wrong token."""
        m = await self.get(raw_mac)
        digest = m.settings.get("callback_hash")
        if token is None or not isinstance(digest, str) or not token_matches(token, digest):
            raise Unauthenticated("callback token missing or wrong for this machine")
        return m

    async def discover_ks(self, raw_mac: str, token: str | None) -> str:
        self._check_discovery(token)
        mac = v.normalize_mac(raw_mac)
        return self.templates.discover_ks(mac=mac, token=self.discovery_token)

    async def install_ks(self, raw_mac: str, token: str | None) -> str:
        """The install kickstart, with a fresh agent join token when labd is configured.

        The token is bound to the machine (:func:`binding_of`); it replaces the machine's
        previous one, which is revoked. Conflict when the install ended meanwhile (the new
        token is revoked then); Unavailable/PermissionDenied when labd would not make one.
        """
        m = await self._installer(raw_mac, token)
        assert token is not None
        if m.state is not MachineState.INSTALLING or not (m.hostname and m.role and m.disk):
            raise Conflict(f"machine {m.mac} is {m.state.value}, not installing")
        issued = None
        if self.join_tokens is not None:
            issued = await self.join_tokens.create_agent_token(binding_of(m), self.join_ttl)
        kept = False
        try:
            async with self._lock:
                # Read again: the install may have ended while labd was asked.
                m = await self._installer(raw_mac, token)
                if m.state is not MachineState.INSTALLING or not (m.hostname and m.role and m.disk):
                    raise Conflict(f"machine {m.mac} is {m.state.value}, not installing")
                previous = m.settings.get(JOIN_TOKEN_ID)
                if issued is not None or m.settings.get("expect_enroll"):
                    settings = {**m.settings, "expect_enroll": issued is not None}
                    settings.pop(JOIN_TOKEN_ID, None)
                    if issued is not None and issued.id is not None:
                        settings[JOIN_TOKEN_ID] = issued.id
                    m = await self._save(m, settings=settings)
                    if isinstance(previous, str) and previous != settings.get(JOIN_TOKEN_ID):
                        self._ended_tokens.append(previous)
                kept = True
        finally:
            if not kept and issued is not None and issued.id is not None:
                self._ended_tokens.append(issued.id)
            # A refused script must not leave its token behind, even when cancelled.
            with trio.move_on_after(15) as scope:
                scope.shield = not kept
                await self._end_tokens()
        assert m.hostname and m.role and m.disk  # checked under the lock
        join_token = issued.token if issued is not None else None
        return self.templates.install_ks(
            mac=m.mac,
            token=token,
            hostname=m.hostname,
            role=m.role,
            disk=m.disk,
            ssh_keys=list(m.settings.get("ssh_keys", [])),
            reprovision=bool(m.settings.get("reprovision")),
            join_token=join_token,
            labd_url=self.labd_url,
            ca_fingerprint=self.labd_ca_fingerprint,
        )

    # --- installer callbacks ------------------------------------------------------------------

    async def discover(self, body: Any, token: str | None) -> Machine:
        """Record the inventory a discovery boot posted: a new machine, or a refresh of one
        that is still only discovered (Conflict for any other state; nothing is changed)."""
        self._check_discovery(token)
        inv = structure(body, Inventory)
        mac = v.normalize_mac(inv.mac, field="body.mac")
        nics = [
            attrs.evolve(n, mac=v.normalize_mac(n.mac, field=f"body.nics[{i}].mac"))
            for i, n in enumerate(inv.nics)
        ]
        inventory = unstructure(attrs.evolve(inv, mac=mac, nics=nics))
        v.validate_inventory_text(inventory)
        async with self._lock:
            m = await self._get_or_none(mac)
            if m is None:
                m = Machine(mac=mac, state=MachineState.DISCOVERED, message="discovered")
            elif m.state is not MachineState.DISCOVERED:
                # Anyone on the LAN can post here: once a machine is queued or installed its
                # inventory (the hardware identity its join token is bound to) is kept.
                raise Conflict(
                    f"machine {mac} is {m.state.value}; its inventory is kept",
                    details={
                        "state": m.state.value,
                        "hint": f"to discover it again: labctl provision forget {mac}",
                    },
                )
            saved = await self._save(m, inventory=inventory)
        log.info("discovered %s (%s %s)", mac, inv.system.vendor, inv.system.product)
        return saved

    async def progress(self, body: Any, token: str | None) -> Machine:
        report = structure(body, ProgressReport)
        if not 0 <= report.percent <= 100:
            raise Invalid("percent must be 0..100", details={"fields": ["body.percent"]})
        async with self._lock:
            m = await self._installer(report.mac, token)
            watchdog_failed = m.state is MachineState.FAILED and m.settings.get("failed_by")
            if m.state not in (MachineState.INSTALLING, MachineState.INSTALLED) and not (
                watchdog_failed
            ):
                raise Conflict(f"machine {m.mac} is {m.state.value}; no install is running")
            message = v.display_text(report.message, limit=500)
            settings = {**m.settings, "percent": report.percent}
            settings.pop("failed_by", None)
            # Only a watchdog failure may be revived by later progress; a failure the
            # installer reported itself stays until an operator acts.
            if report.failed:
                state = MachineState.FAILED
            elif report.phase == "enrolled":
                state = MachineState.ENROLLED
            elif report.phase == "firstboot" or (report.phase == "post" and report.percent >= 100):
                state = MachineState.INSTALLED
                settings["reprovision"] = False
            else:
                state = MachineState.INSTALLING
            saved = await self._save(
                m, state=state, phase=report.phase, message=message, settings=settings
            )
        log.info("%s: %s %s%% %s", m.mac, report.phase, report.percent, message)
        await self._end_tokens()
        return saved

    async def enrolled(self, body: Any) -> Machine:
        """The machine's agent enrolled with labd: it is installed, even if callbacks were lost."""
        report = structure(body, EnrolledReport)
        async with self._lock:
            if report.mac is not None:
                m = await self.get(report.mac)
            elif report.hostname is not None:
                name = v.validate_hostname(report.hostname, field="body.hostname")
                found = [x for x in await self.machines.list() if x.hostname == name]
                if not found:
                    raise NotFound(f"no machine named {name}", details={"resource": name})
                m = found[0]
            else:
                raise Invalid("give mac or hostname", details={"fields": ["body"]})
            saved = await self._mark_enrolled(m, "agent enrolled")
        await self._end_tokens()
        return saved

    async def _mark_enrolled(self, m: Machine, message: str) -> Machine:
        settings = {**m.settings, "reprovision": False, "percent": 100}
        settings.pop("failed_by", None)
        return await self._save(
            m, state=MachineState.ENROLLED, phase="enrolled", message=message, settings=settings
        )

    # --- operator actions ---------------------------------------------------------------------

    async def install(self, body: Any) -> Machine:
        req = structure(body, InstallRequest)
        mac = v.normalize_mac(req.mac, field="body.mac")
        hostname = v.validate_hostname(req.hostname, field="body.hostname")
        role = v.validate_role(req.role, field="body.role")
        disk = v.validate_disk(req.disk, field="body.disk")
        keys = [
            v.validate_ssh_key(k, field=f"body.ssh_keys[{i}]") for i, k in enumerate(req.ssh_keys)
        ]
        local_boot = v.validate_local_boot(req.local_boot, field="body.local_boot")
        async with self._lock:
            for other in sorted(await self._hostname_owners(hostname)):
                if other != mac:
                    raise Conflict(f"hostname {hostname} is already used by {other}")
            m = await self._get_or_none(mac) or Machine(mac=mac)
            if m.state in (MachineState.INSTALLED, MachineState.ENROLLED, MachineState.INSTALLING):
                raise Conflict(
                    f"machine {mac} is {m.state.value}",
                    details={"hint": f"use: labctl provision reprovision {mac}"},
                )
            settings = {
                **m.settings,
                "ssh_keys": keys,
                "local_boot": local_boot,
                "reprovision": False,
                "percent": 0,
            }
            saved = await self._save(
                m,
                state=MachineState.QUEUED,
                hostname=hostname,
                role=role,
                disk=disk,
                phase=None,
                message="queued for install",
                settings=settings,
            )
        await self._end_tokens()
        return saved

    async def reprovision(self, body: Any) -> dict[str, Any]:
        req = structure(body, ReprovisionRequest)
        async with self._lock:
            m = await self.get(req.mac)
            if not (m.hostname and m.role and m.disk):
                raise Conflict(f"machine {m.mac} was never installed; use provision install")
            if m.state in (MachineState.INSTALLING, MachineState.QUEUED):
                raise Conflict(f"machine {m.mac} is already {m.state.value}")
            plan = reprovision_plan(m.role).as_dict()
            if not req.dry_run:
                m = await self._save(
                    m,
                    state=MachineState.QUEUED,
                    phase=None,
                    message="queued for reprovision",
                    settings={**m.settings, "reprovision": True, "percent": 0},
                )
        await self._end_tokens()
        return {"dry_run": req.dry_run, "plan": plan, "machine": public_view(m)}

    async def forget(self, raw_mac: str) -> None:
        mac = v.normalize_mac(raw_mac)
        async with self._lock:
            m = await self._get_or_none(mac)
            with self._rows.writing(mac):
                await self.machines.delete(mac)
                self._rows.committed(mac, None)
            self._bump()
            token_id = m.settings.get(JOIN_TOKEN_ID) if m is not None else None
            if isinstance(token_id, str):
                self._ended_tokens.append(token_id)
        await self._end_tokens()

    # --- watchdog -----------------------------------------------------------------------------

    async def fail_stalled(self) -> list[Machine]:
        """Mark every machine whose phase timed out as failed, naming that phase.

        With an enrollment check (a bastion joined to labd), a stalled machine whose agent
        labd already sees online is marked enrolled instead: its installer's callbacks were
        lost, not its install. labd is asked outside the lock; a machine that changed in the
        meantime is left for the next round.
        """
        candidates = await self.machines.list(state=MachineState.INSTALLING)
        candidates += await self.machines.list(state=MachineState.INSTALLED)
        found = stalled(candidates, at=self.clock(), timeouts=self.timeouts)
        online = await self._online_agents([m.hostname for m, _ in found if m.hostname])
        failed = []
        async with self._lock:
            for seen, phase in found:
                m = await self._get_or_none(seen.mac)
                if m is None or m.updated_at != seen.updated_at:
                    continue
                if m.hostname in online:
                    await self._mark_enrolled(
                        m, f"agent online in labd; callbacks missed ({phase})"
                    )
                    log.info("%s: %s is online in labd, marked enrolled", m.mac, m.hostname)
                    continue
                limit = self.timeouts.get(phase, 0)
                failed.append(
                    await self._save(
                        m,
                        state=MachineState.FAILED,
                        phase=phase,
                        message=f"no progress for {limit:g} s in phase {phase}",
                        settings={**m.settings, "failed_by": "watchdog"},
                    )
                )
                log.warning("%s: install stalled in phase %s", m.mac, phase)
        await self._end_tokens()
        return failed

    async def _online_agents(self, hostnames: list[str]) -> set[str]:
        """Which of ``hostnames`` labd sees online; none when not joined or labd cannot say."""
        online: set[str] = set()
        if self.enrollment is None:
            return online
        for name in hostnames:
            try:
                if await self.enrollment.agent_online(name):
                    online.add(name)
            except LabError as exc:
                log.warning("cannot ask labd about %s: %s", name, exc.message)
        return online

    async def count_states(self) -> dict[str, int]:
        """``{state: number of machines}``, read from the store (for the machines gauge)."""
        counts: dict[str, int] = {}
        for m in await self.machines.list():
            counts[m.state.value] = counts.get(m.state.value, 0) + 1
        return counts

    async def run_watchdog(self, interval: float) -> None:
        """Check phase timeouts every ``interval`` seconds, until cancelled."""
        while True:
            await trio.sleep(interval)
            await self.fail_stalled()


__all__ = [
    "PHASES",
    "Bastion",
    "EnrollmentCheck",
    "JoinTokenSource",
    "StaticTokenSource",
    "public_view",
    "stalled",
]
