"""Power control: one small driver protocol and its drivers (wol, redfish, ipmi, agent).

The drivers only talk to the machine's BMC, its NIC or its agent; labd decides who may use
them, stores their settings sealed and audits every action. BMC libraries are blocking, so
each call runs in a worker thread under a trio deadline; their errors come back as the
intent-named errors of :mod:`lab.errors`, one line each.
"""

from __future__ import annotations

from lab.power.base import (
    ACTIONS,
    PowerAction,
    PowerDriver,
    PowerResult,
    PowerState,
    run_action,
)

__all__ = ["ACTIONS", "PowerAction", "PowerDriver", "PowerResult", "PowerState", "run_action"]
