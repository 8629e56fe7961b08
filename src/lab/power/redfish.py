"""Redfish through the ``sushy`` client library (optional extra ``labctl[power]``).

Each call opens a short-lived client with HTTP basic auth (no BMC sessions left behind),
in a worker thread with socket timeouts equal to the deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lab.errors import Conflict, Invalid, LabError, NotFound, PermissionDenied, Unavailable
from lab.power.base import PowerState, in_thread

T = TypeVar("T")


def _sushy() -> Any:
    try:
        import sushy
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise Unavailable("the redfish driver needs sushy: pip install 'labctl[power]'") from exc
    return sushy


class RedfishDriver:
    name = "redfish"

    def __init__(
        self,
        url: str,
        *,
        system: str | None = None,
        username: str | None = None,
        password: str | None = None,
        verify: bool = True,
        ca_file: str | None = None,
        deadline: float = 20.0,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise Invalid(
                f"redfish url must be http(s)://…, got {url!r}", details={"fields": ["url"]}
            )
        self.url = url.rstrip("/")
        self.system = system
        self.username = username
        self.password = password
        self.verify: bool | str = (ca_file or True) if verify else False
        self.deadline = deadline

    # -- the blocking side (worker thread) ---------------------------------------------------

    def _system(self) -> Any:
        sushy = _sushy()
        root = sushy.Sushy(
            self.url,
            verify=self.verify,
            auth=sushy.auth.BasicAuth(username=self.username, password=self.password),
            read_timeout=self.deadline,
            connect_timeout=self.deadline,
            server_side_retries=0,
            server_side_retries_delay=0,
        )
        if self.system:
            path = self.system
            if not path.startswith("/"):
                path = f"{root.get_system_collection().path.rstrip('/')}/{path}"
            return root.get_system(path)
        members = sorted(root.get_system_collection().members_identities)
        if len(members) != 1:
            raise Invalid(
                f"redfish: {self.url} has {len(members)} systems ({', '.join(members)}); "
                "name one with --system",
                details={"fields": ["system"], "systems": members},
            )
        return root.get_system(members[0])

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        sushy = _sushy()
        exc_mod = sushy.exceptions
        try:
            return fn(self._system())
        except LabError:
            raise
        except exc_mod.AccessError as exc:
            raise PermissionDenied(
                f"redfish: {self.url} refused the credentials (HTTP {exc.status_code})",
                details={"bmc_status": exc.status_code},
            ) from exc
        except exc_mod.ResourceNotFoundError as exc:
            raise NotFound(f"redfish: not found on {self.url}: {_one_line(exc)}") from exc
        except exc_mod.BadRequestError as exc:
            raise Conflict(f"redfish: the BMC refused {what}: {_one_line(exc)}") from exc
        except exc_mod.HTTPError as exc:
            if exc.status_code in (405, 409):
                raise Conflict(f"redfish: the BMC refused {what}: {_one_line(exc)}") from exc
            raise Unavailable(f"redfish: {what} failed: {_one_line(exc)}") from exc
        except exc_mod.ConnectionError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSLError" in str(exc):
                raise Unavailable(
                    f"redfish: TLS verification of {self.url} failed "
                    "(give the BMC's CA with ca_file, or insecure)",
                    details={"hint": "labctl power set … --ca-file BMC-CA.pem"},
                ) from exc
            raise Unavailable(
                f"redfish: cannot reach {self.url} within {self.deadline:g}s",
                details={"deadline": self.deadline},
            ) from exc
        except exc_mod.SushyError as exc:
            raise Unavailable(f"redfish: {what} failed: {_one_line(exc)}") from exc

    async def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        return await in_thread(
            lambda: self._call(what, fn), deadline=self.deadline, what=f"redfish {self.url}"
        )

    def _reset(self, system: Any, wanted: list[str], what: str) -> str:
        sushy = _sushy()
        allowed = {v.value for v in system.get_allowed_reset_system_values()}
        for value in wanted:
            if value in allowed:
                system.reset_system(sushy.ResetType(value))
                return f"{value} accepted"
        raise Conflict(
            f"redfish: the BMC does not offer {what} (it allows {', '.join(sorted(allowed))})"
        )

    # -- the protocol ------------------------------------------------------------------------

    async def status(self) -> PowerState:
        return await self._run("status", lambda s: _state(s.power_state))

    async def on(self) -> str:
        return await self._run("on", lambda s: self._reset(s, ["On", "ForceOn"], "on"))

    async def off(self) -> str:
        return await self._run("off", lambda s: self._reset(s, ["ForceOff"], "off"))

    async def cycle(self) -> str:
        def cycle(system: Any) -> str:
            if _state(system.power_state) == "off":
                return self._reset(system, ["On", "ForceOn"], "on")
            return self._reset(system, ["PowerCycle", "ForceRestart"], "cycle")

        return await self._run("cycle", cycle)

    async def reset(self) -> str:
        return await self._run("reset", lambda s: self._reset(s, ["ForceRestart"], "reset"))

    async def set_next_boot_pxe(self) -> str:
        def pxe(system: Any) -> str:
            sushy = _sushy()
            system.set_system_boot_options(
                target=sushy.BootSource.PXE, enabled=sushy.BootSourceOverrideEnabled.ONCE
            )
            return "next boot Pxe (Once)"

        return await self._run("next boot pxe", pxe)


def _state(value: Any) -> PowerState:
    text = str(getattr(value, "value", value) or "")
    if text in ("On", "PoweringOn"):
        return "on"
    if text in ("Off", "PoweringOff"):
        return "off"
    return "unknown"


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "detail", None) or str(exc)
    return " ".join(str(text).split())[:300]
