"""A tiny IPMI 2.0 BMC on loopback (pyghmi's server side): ``python fakebmc.py USER PASS``.

It binds 127.0.0.1 on a free UDP port, prints ``port N`` and serves until killed. Its power
state and boot device live in memory; each change is also printed (``power on``, ``bootdev
network``) so a test can see what reached it.
"""

from __future__ import annotations

import sys
from typing import Any

from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import serversession

_open_session = serversession.ServerSession.create_open_session_response


def _sha1_only(self: Any, request: bytearray) -> bytearray:
    """pyghmi's server only speaks cipher suite 3 (SHA-1) but accepts any offer; refuse the
    others like a real BMC (status 0x11, invalid authentication algorithm) so a client that
    offers SHA-256 first (pyghmi does) falls back instead of failing the handshake."""
    if request[12] != 1:
        return bytearray([request[0], 0x11, 0, 0]) + request[4:8]
    result: bytearray = _open_session(self, request)
    return result


def _fresh_session(self: Any, data: bytearray) -> None:
    """A new RMCP+ session from an address that already had one starts over (pyghmi's server
    would feed it to the old session's state; a client that logs in again from the same
    socket, as pyghmi's does, then hangs)."""
    serversession.ServerSession(
        self.bmc.authdata, self.bmc.kg, self.sockaddr, self.socket, data, self.bmc.uuid, self.bmc
    )


serversession.ServerSession.create_open_session_response = _sha1_only
serversession.ServerSession._got_rmcp_openrequest = _fresh_session


class FakeBmc(bmc.Bmc):  # type: ignore[misc]
    def __init__(self, authdata: dict[str, str]) -> None:
        super().__init__(authdata, port=0, address="127.0.0.1")
        # Sessions are keyed by the server's port: the real one, not the 0 asked for.
        self.port = self.serversocket.getsockname()[1]
        self.power = "off"
        self.bootdev = "default"

    def _say(self, line: str) -> None:
        print(line, flush=True)

    def get_power_state(self) -> str:
        return self.power

    def power_on(self) -> None:
        self.power = "on"
        self._say("power on")

    def power_off(self) -> None:
        self.power = "off"
        self._say("power off")

    def power_cycle(self) -> Any:
        if self.power == "off":
            return 0xD5  # "not supported in present state", as real BMCs answer
        self._say("power cycle")
        return None

    def power_reset(self) -> Any:
        if self.power == "off":
            return 0xD5
        self._say("power reset")
        return None

    def power_shutdown(self) -> None:
        self.power = "off"
        self._say("power shutdown")

    def get_boot_device(self) -> str:
        return self.bootdev

    def set_boot_device(self, bootdevice: str) -> None:
        self.bootdev = bootdevice
        self._say(f"bootdev {bootdevice}")


def main() -> None:
    user, password = sys.argv[1], sys.argv[2]
    server = FakeBmc({user: password})
    print(f"port {server.port}", flush=True)
    server.listen()


if __name__ == "__main__":
    main()
